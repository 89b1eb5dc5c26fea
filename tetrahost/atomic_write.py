"""Replace a file so a reader (or a crash) sees the old content or the new, never part of it."""
from __future__ import annotations

import os


def write_text_atomically(path: str, text: str, tmp: str | None = None, mode: int = 0o644) -> None:
    """Write text to tmp (default: PATH.tmp-PID beside it), fsync, rename over path;
    on any failure the temp file is removed and the error raised."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
