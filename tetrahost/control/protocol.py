"""Control socket protocol, version 1: JSON lines over a Unix stream socket.

Every request is one JSON object on one line carrying "version" and "op";
every reply is one JSON object on one line with "version" and "ok" (and
"error" when not ok).  `getevents` turns the connection into a stream of
`{"event": <Tetragon JSON event>}` lines, interleaved with
`{"dropped": N, "dropped_total": M}` notices when this client fell behind.
The full description is docs/control-protocol.md; bump VERSION on any change
an old client could misread.
"""
from __future__ import annotations

import json

VERSION = 1
DEFAULT_SOCKET = "/run/tetrahost/tetrahost.sock"
MAX_REQUEST_BYTES = 1 << 20          # one request line (policy_add carries a policy file)
OPS = ("status", "getevents", "policy_list", "policy_add", "policy_delete")

EVENT_PREFIX = '{"event":'


class ProtocolError(Exception):
    """A request the server will not act on; the message goes back to the client."""


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


def parse_request(raw: bytes) -> dict:
    try:
        req = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ProtocolError("request is not a JSON object")
    version = req.get("version")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this agent speaks {VERSION})")
    op = req.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    return req


def request(op: str, **fields) -> bytes:
    return encode({"version": VERSION, "op": op, **fields})
