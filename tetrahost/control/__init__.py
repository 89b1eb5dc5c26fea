"""The agent's control socket: protocol, event filters, server, client (see docs/control-protocol.md)."""
