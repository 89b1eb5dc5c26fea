"""Command lines: tetrahost (the agent) and tetra (the client)."""
