"""Bounds on the agent's own log: a hostile loop must not fill the disk.

Whoever controls what the agent reacts to (files dropped into the policy
directory, clients of the control socket, a resource that keeps failing) can
make it log the same line again and again.  LogLimiter is a logging.Filter
put on every handler of the root logger:

  - an identical line (same logger, level and text) is written at most
    REPEAT_BURST times per REPEAT_WINDOW seconds; the rest are counted, and
    one line "... repeated N more times" is written when its window ends;
  - all warnings and errors together are held to RATE lines per second (a
    token bucket of BURST): distinct lines naming ever new files still cannot
    grow the log faster than about RATE x the line length;
  - a message longer than MAX_CHARS is cut (a policy error may quote the file).

Lines below WARNING are only cut to MAX_CHARS: they report changes that happened
(a policy loaded, a hook attached), and several identical ones are real
(a policy's hooks of one kind each log the same attach line).
"""
from __future__ import annotations

import logging
import threading
import time

REPEAT_WINDOW = 60.0
REPEAT_BURST = 3
RATE = 200.0
BURST = 5000
MAX_CHARS = 8192
MAX_KEYS = 4096        # distinct lines remembered; the oldest window is reported and dropped beyond


class LogLimiter(logging.Filter):
    def __init__(self, window: float = REPEAT_WINDOW, repeat_burst: int = REPEAT_BURST,
                 rate: float = RATE, burst: int = BURST, clock=time.monotonic):
        super().__init__()
        self.window, self.repeat_burst, self.rate, self.burst = window, repeat_burst, rate, burst
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple, list] = {}      # key -> [window start, lines written, lines suppressed, record]
        self._tokens = float(burst)
        self._refilled = clock()
        self._pending_reports: list[tuple[logging.LogRecord, int]] = []   # (first record, count suppressed)
        self.suppressed_by_rate = 0             # not yet reported
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        # A record reaches every handler: decide once, let each handler agree.
        decided = record.__dict__.get("_limiter_decision")
        if decided is not None:
            return decided
        decided = self._decide(record)
        record._limiter_decision = decided
        return decided

    def _decide(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if len(text) > MAX_CHARS:
            record.msg, record.args = f"{text[:MAX_CHARS]}... ({len(text) - MAX_CHARS} more characters)", None
        if getattr(record, "_limiter_report", False) or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, text)
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] >= self.window:
                self._report(key, entry)
                entry = None
            if entry is None:
                if len(self._seen) >= MAX_KEYS:
                    oldest = next(iter(self._seen))
                    self._report(oldest, self._seen[oldest])
                entry = self._seen[key] = [now, 0, 0, record]
            if entry[1] >= self.repeat_burst:
                entry[2] += 1
                self.suppressed_total += 1
                return False
            if not self._take_token(now):
                self.suppressed_by_rate += 1
                self.suppressed_total += 1
                return False
            entry[1] += 1
            return True

    def _take_token(self, now: float) -> bool:
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _report(self, key, entry) -> None:
        del self._seen[key]
        if entry[2]:
            self._pending_reports.append((entry[3], entry[2]))

    def flush(self) -> None:
        """Write the "repeated N more times" lines of windows that have ended
        (called from a timer of the agent's loop, every few seconds)."""
        now = self.clock()
        with self._lock:
            for key, entry in list(self._seen.items()):
                if now - entry[0] >= self.window:
                    self._report(key, entry)
            reports, self._pending_reports = self._pending_reports, []
            by_rate, self.suppressed_by_rate = self.suppressed_by_rate, 0
        for record, count in reports:
            _emit(record.name, record.levelno, "last message repeated %d more times in %.0f s: %s",
                  count, self.window, record.getMessage()[:500])
        if by_rate:
            _emit(__name__, logging.WARNING, "log rate limit (%.0f lines/s): %d warning/error lines not written",
                  self.rate, by_rate)


def _emit(name: str, level: int, msg: str, *args) -> None:
    logging.getLogger(name).log(level, msg, *args, extra={"_limiter_report": True})


def install(root: logging.Logger | None = None) -> LogLimiter:
    """Put one LogLimiter on every handler of the root logger; the limiter."""
    root = root or logging.getLogger()
    limiter = LogLimiter()
    for handler in root.handlers:
        handler.addFilter(limiter)
    return limiter
