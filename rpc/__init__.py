"""JSON-RPC 2.0 on the daemon's unix socket: method table, server, client connection."""
