"""Every aiohttp handler: the device and dashboard streams, the REST resources, the web
page, and the middlewares and auth helpers they share. Handlers are glue: they parse,
authorise, call a service or the storage, and answer."""
