"""Device ingest: the sans-I/O device session, the group-commit writer, and the
WebSocket handler that glues them to aiohttp."""
