"""REST API: authentication, error mapping, and one module of handlers per resource."""
