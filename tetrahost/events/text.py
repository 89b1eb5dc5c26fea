"""Kernel and file-system bytes as exported text: always valid UTF-8, never lossy.

Paths, arguments, cgroup names are bytes on Linux and need not be UTF-8.
Exporters need text, and consumers of JSON need valid UTF-8 (Python's
surrogateescape would hand them lone surrogates like "\\udcff", which strict
decoders reject).  The one rule, used for every byte string we export:

  * UTF-8 sequences stay as they are (control characters included: the JSON
    encoder escapes those, the compact format renders them visibly);
  * each byte that is not part of a valid UTF-8 sequence becomes the four
    characters  \\xNN  (NN: two lower-case hex digits), e.g. b"a\\xffb" -> "a\\xffb";
  * a backslash that would otherwise read as an escape is itself written
    \\x5c : one followed by "x5c" or by "x" and a hex pair 80..ff, so the
    4-byte name b"\\\\xff" -> "\\x5cxff".

Reading it back (text_to_bytes): every "\\x5c" and every "\\x" followed by a
hex pair 80..ff (either case), read left to right, is one byte; everything
else is UTF-8 text.  Only bytes >= 0x80 can be invalid UTF-8, which is why the
escapes stop there: systemd's own escapes in unit and cgroup names ("\\x2d"
for "-") and backslashes in regexes or Windows-style arguments come out exactly
as Tetragon shows them.  (Tetragon replaces invalid bytes with U+FFFD, which
loses them.)  Encoded UTF-16
surrogates (b"\\xed\\xa0\\x80") are not valid UTF-8 and are escaped byte by byte.
"""
from __future__ import annotations

import os
import re

__all__ = ["bytes_to_text", "os_text", "text_to_bytes"]

# Invalid bytes come out of surrogateescape decoding as U+DC80..U+DCFF (bytes
# below 0x80 are always valid), so one pass over that decoding finds both
# what to escape and the backslashes to protect.
_TOKEN = r"x(5[cC]|[89a-fA-F][0-9a-fA-F])"
_ESCAPE = re.compile(r"\\(?=" + _TOKEN + ")|[\udc80-\udcff]")
_READ_BACK = re.compile(r"\\" + _TOKEN)


def _escape(match: re.Match) -> str:
    ch = match.group()
    return "\\x5c" if ch == "\\" else f"\\x{ord(ch) - 0xDC00:02x}"


def bytes_to_text(raw: bytes) -> str:
    """The exported text of a byte string (rule in the module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _ESCAPE.sub(_escape, raw.decode("utf-8", "surrogateescape"))
    if "\\x" in text:           # rare: only then can a backslash be mistaken for an escape
        return _ESCAPE.sub(_escape, text)
    return text


def os_text(name: str) -> str:
    """bytes_to_text for a str the OS gave us (os.listdir/scandir: surrogateescape)."""
    if name.isascii() and "\\x" not in name:
        return name
    return bytes_to_text(os.fsencode(name))


def text_to_bytes(text: str) -> bytes:
    """The original bytes of an exported text (the inverse of bytes_to_text)."""
    out = bytearray()
    pos = 0
    for match in _READ_BACK.finditer(text):
        out += _encode(text[pos:match.start()])
        out.append(int(match.group(1), 16))
        pos = match.end()
    out += _encode(text[pos:])
    return bytes(out)


def _encode(text: str) -> bytes:
    # Lone surrogates only come from text that did not go through bytes_to_text
    # (a JSON line read with surrogateescape): give back the byte they stand for.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
