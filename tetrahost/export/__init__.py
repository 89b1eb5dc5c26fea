"""Exporters: Tetragon JSON lines, compact one-liners, sinks."""
