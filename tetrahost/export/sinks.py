"""Where rendered JSON lines go: stdout and plain files.

Lines arrive in batches (one per ring-buffer drain) and are written with one
write call per batch.  A file is opened in append mode with 0600 permissions:
events name binaries, arguments and users, which not every local user may read.
"""
from __future__ import annotations

import os
import sys


class LineSink:
    def __init__(self, stream, name: str, owns_stream: bool = True):
        self.stream = stream
        self.name = name
        self._owns = owns_stream
        self.lines_written = 0

    def write_events(self, batch) -> None:
        """batch: list of (json_line, EventMeta); one write per batch."""
        self.stream.write("".join(line + "\n" for line, _ in batch))
        self.stream.flush()
        self.lines_written += len(batch)

    def close(self) -> None:
        if self._owns:
            self.stream.close()
        else:
            self.stream.flush()


def stdout_sink() -> LineSink:
    return LineSink(sys.stdout, "stdout", owns_stream=False)


def file_sink(path: str) -> LineSink:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return LineSink(os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16), path)
