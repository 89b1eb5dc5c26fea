"""The JSON encoder of the event path: orjson where it is installed.

Measured on a 3.6 KB process_exec event on this machine (2 cores, shared):
the standard library's C encoder 21.3 µs per dumps, ujson 9.7, msgspec 2.8,
orjson 1.8 µs; all four wrote the same bytes for that event.  orjson is the
fastest of them and widely used and maintained; it is a PyPI dependency of
the development install (the `fast` extra) and a Recommends of the packages
(Debian 12 has no python3-orjson: there the standard library's encoder is
used, with the same output).

The output is always what json.JSONEncoder(ensure_ascii=True, compact
separators) writes, whichever encoder ran: orjson writes non-ASCII
characters as UTF-8 where the standard library writes \\uXXXX escapes (and
escapes DEL, 0x7f, where orjson does not), so a result that is not plain
printable ASCII is encoded again by the standard library; so is anything
orjson refuses (integers beyond 64 bits, non-string keys).  Our renderers
make text out of bytes with \\xNN escapes (tetrahost.events.text), so that
second pass is rare: a valid UTF-8 name.  Every exporter, test and the
schema check see one stable form.
"""
from __future__ import annotations

import json

_std = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

try:
    import orjson
except ImportError:         # Debian 12: no python3-orjson
    orjson = None

ENCODER = "orjson" if orjson is not None else "json"


def _dumps_orjson(obj, _fast=orjson.dumps if orjson is not None else None) -> str:
    try:
        data = _fast(obj)
    except TypeError:
        return _std(obj)
    if data.isascii() and b"\x7f" not in data:
        return data.decode("ascii")
    return _std(obj)


dumps = _dumps_orjson if orjson is not None else _std
