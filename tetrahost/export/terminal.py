"""Event text on its way to a terminal: nothing in it may drive the terminal.

Argument lists, binary and file names are chosen by whoever runs a process, so
they can hold ESC sequences (clear the screen, set the window title, recolour
or rewrite earlier lines), a carriage return or a newline that forges a whole
event line, or Unicode bidi controls that reorder what is shown.  The compact
one-liners (`tetra getevents -o compact`, stdout and journald MESSAGE) show
every string field through terminal_text:

  \\n \\r \\t                   newline, carriage return, tab
  \\xNN                       any other C0 control, DEL, and each byte of a C1
                             control (U+0080..U+009F), of the bidi controls
                             U+061C U+200E U+200F U+202A..U+202E U+2066..U+2069
                             and of U+2028/U+2029 (line/paragraph separators),
                             and each byte that is not UTF-8
  \\x5c                       a backslash that would otherwise read as one of
                             the escapes above (followed by n, r, t, or x and
                             a hex pair)

A string from the JSON export is first read back to its bytes
(tetrahost.events.text.text_to_bytes), so a byte that is not UTF-8 shows as
the same \\xNN in both.  The compact line is for reading; the exact bytes are
in the JSON.

`tetra getevents -o json` prints each line unchanged when it is printable
ASCII without a \\u escape of a lone surrogate (all of tetrahost's own JSON
is); anything else (raw UTF-8, DEL, a \\r between tokens...) is parsed and
written again with every non-ASCII character \\u-escaped, strings that held
bytes that are not UTF-8 (read with surrogateescape) in the \\xNN form of
docs/outputs.md: valid JSON, valid UTF-8, no raw control byte.
"""
from __future__ import annotations

import json
import re

from tetrahost.events.text import bytes_to_text, text_to_bytes

__all__ = ["terminal_text", "terminal_safe", "terminal_json_line", "is_plain_line"]

_CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_NEEDS_WORK = re.compile(f"[{_CONTROLS}\\\\\ud800-\udfff]")
_ESCAPE = re.compile(f"\\\\(?=[nrt]|x[0-9a-fA-F]{{2}})|[{_CONTROLS}\udc80-\udcff]")
_PLAIN_BYTES = bytes(range(0x20, 0x7f)).replace(b"\\", b"")     # printable ASCII but the backslash
# Raw bytes other than printable ASCII (a \r between tokens is valid JSON
# whitespace, but a terminal obeys it), or a \u escape of a lone surrogate.
_NOT_PRINTABLE_JSON = re.compile(r"[^\x20-\x7e]|\\u[dD][89a-fA-F]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\x5c"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:                 # a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8"))


def terminal_text(text: str) -> str:
    """text (exported form, or raw with surrogateescape bytes) safe to print on a terminal."""
    if _NEEDS_WORK.search(text) is None:
        return text
    raw = text_to_bytes(text)
    return _ESCAPE.sub(_escape, raw.decode("utf-8", "surrogateescape"))


def terminal_safe(value):
    """A copy of a parsed JSON value with every string (keys too) through terminal_text."""
    if isinstance(value, str):
        return terminal_text(value)
    if isinstance(value, dict):
        return {terminal_text(k): terminal_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [terminal_safe(v) for v in value]
    return value


def is_plain_line(line: str) -> bool:
    """A JSON line whose strings cannot hold anything terminal_text would change:
    printable ASCII only, and no backslash (so no \\u, \\n... escapes).
    (Deleting the plain bytes and finding none left: 2 µs for a 4.4 KB line,
    the equivalent regex search 10 µs.)"""
    return line.isascii() and not line.encode("ascii").translate(None, _PLAIN_BYTES)


def _valid_text(value):
    """Strings holding lone surrogates (bytes read with surrogateescape, or a
    "\\udXXX" escape in the input) back to the exported \\xNN form."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return bytes_to_text(text_to_bytes(value))
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    return value


def terminal_json_line(line: str, event) -> str:
    """The JSON line to print for `-o json` (event: json.loads(line))."""
    if _NOT_PRINTABLE_JSON.search(line) is None:
        return line
    return json.dumps(_valid_text(event), ensure_ascii=True, separators=(",", ":"))
