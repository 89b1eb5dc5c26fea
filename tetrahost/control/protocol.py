"""Control socket protocol, version 1: JSON lines over a Unix stream socket.

Every request is one JSON object on one line (a "frame") carrying "version"
and "op"; every reply is one JSON object on one line with "version" and "ok"
(and "error", and for some errors "code", when not ok).  `getevents` turns
the connection into a stream of `{"event": <Tetragon JSON event>}` lines,
interleaved with `{"dropped": N, "dropped_total": M}` notices when this
client fell behind.  The full description is docs/control-protocol.md; bump
VERSION on any change an old client could misread.
"""
from __future__ import annotations

import json

VERSION = 1
DEFAULT_SOCKET = "/run/tetrahost/tetrahost.sock"
# The largest request frame (one line, newline included).  policy_add carries
# a whole policy file, and policy files are capped at 1 MiB: JSON escaping
# (quotes, backslashes, newlines as \n) can grow the text, so twice the file
# cap leaves room for any legitimate policy while bounding what one client
# can make the agent buffer.
MAX_FRAME = 2 << 20
OPS = ("status", "getevents", "policy_list", "policy_add", "policy_delete",
       "policy_set_mode", "policy_enable", "policy_disable")

EVENT_PREFIX = '{"event":'

# Values of "code" in error replies a client may act on (the text is for humans).
FRAME_TOO_LARGE = "frame_too_large"
FRAME_TIMEOUT = "frame_timeout"
TOO_MANY_CLIENTS = "too_many_clients"
EVICTED = "evicted"
IDLE_TIMEOUT = "idle_timeout"
REPLY_TIMEOUT = "reply_timeout"
POLICY_REJECTED = "policy_rejected"      # with "problems": [{file, line, field, message, text}]
NO_SUCH_POLICY = "no_such_policy"
NOT_DELETABLE = "not_deletable"          # the policy's file is not the policy directory's, or defines others
NOT_APPLICABLE = "not_applicable"        # e.g. set-mode enforce for a policy with nothing to enforce
NOT_PERSISTED = "not_persisted"          # the decision could not be written: nothing changed


class ProtocolError(Exception):
    """A request the server will not act on; the message goes back to the client."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int):
        super().__init__(f"request frame of at least {size} bytes exceeds the limit of "
                         f"{MAX_FRAME} bytes ({MAX_FRAME >> 20} MiB)")
        self.size = size


def encode(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def reply(ok: bool = True, **fields) -> bytes:
    return encode({"version": VERSION, "ok": ok, **fields})


def error(message: str, **fields) -> bytes:
    return reply(False, error=message, **fields)


def event_line(line: str) -> bytes:
    """Wrap an already rendered event without parsing it again (the hot path)."""
    return (EVENT_PREFIX + line + "}\n").encode("utf-8", "surrogateescape")


def unwrap_event(line: str) -> str | None:
    """The event JSON of a stream line, byte-exact, or None if the line is not an event."""
    if line.startswith(EVENT_PREFIX) and line.endswith("}"):
        return line[len(EVENT_PREFIX):-1]
    return None


class FrameReader:
    """Splits a byte stream into request frames, never buffering more than MAX_FRAME.

    feed() returns the complete frames the new data finished; a frame that
    grows past MAX_FRAME without its newline raises FrameTooLarge (the
    connection cannot be resynchronised, so the server answers and closes).
    Only the new bytes are searched for the newline, so a large frame
    arriving in many small reads costs linear time.
    """

    def __init__(self, limit: int = MAX_FRAME):
        self.limit = limit
        self.buf = bytearray()

    @property
    def partial(self) -> bool:
        return bool(self.buf)

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if len(self.buf) + nl - start + 1 > self.limit:
                raise FrameTooLarge(len(self.buf) + nl - start + 1)
            if self.buf:
                self.buf += data[start:nl]
                frames.append(bytes(self.buf))
                self.buf.clear()
            else:
                frames.append(data[start:nl])
            start = nl + 1
        rest = len(data) - start
        if len(self.buf) + rest >= self.limit:      # no room left for the newline
            raise FrameTooLarge(len(self.buf) + rest + 1)
        self.buf += data[start:]
        return frames


def parse_request(raw: bytes) -> dict:
    try:
        req = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"request is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ProtocolError("request is not a JSON object")
    version = req.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(f"unsupported protocol version {version!r} (this agent speaks {VERSION})")
    op = req.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    return req


def request(op: str, **fields) -> bytes:
    # ensure_ascii=False: a policy's non-ASCII text stays one UTF-8 sequence
    # instead of a 6-byte \uXXXX escape, so the frame stays close to the file
    # size.  surrogatepass: an argument holding non-UTF-8 bytes (a --binary
    # regex from argv) travels as json.loads(bytes) decodes it back.
    return (json.dumps({"version": VERSION, "op": op, **fields}, separators=(",", ":"),
                       ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
