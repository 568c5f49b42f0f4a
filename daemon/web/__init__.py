"""The local web UI: an ASGI app on loopback, speaking the JSON-RPC method table."""
