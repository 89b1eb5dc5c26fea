"""The event path's encoder writes exactly what the standard library's compact
ASCII encoder writes, whichever encoder runs underneath."""
import importlib
import json
import sys

import pytest

from tetrahost.export import encode

STD = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

AWKWARD = [
    "".join(chr(i) for i in range(128)),            # every control character, DEL last
    "caf\u00e9 \u2603 \U0001f680",                     # non-ASCII: orjson would write UTF-8
    "\\x80 \\xff",                                     # our escapes of invalid bytes stay text
    {"big": 2**64 - 1, "bigger": 2**70, "neg": -2**63},  # orjson refuses > 64 bits
    {1: "non-string key"},                             # orjson refuses these too
    [True, False, None, 0, -1, "", [], {}],
    {"process_exec": {"process": {"binary": "/usr/bin/true", "arguments": "a\tb\u007f",
                                  "ns": {"uts": {"inum": 4026531838, "is_host": True}}}}},
]


@pytest.mark.parametrize("obj", AWKWARD)
def test_same_text_as_json(obj):
    assert encode.dumps(obj) == STD(obj)


def test_orjson_is_used_when_installed():
    pytest.importorskip("orjson")
    assert encode.ENCODER == "orjson"


def test_without_orjson_the_standard_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "orjson", None)       # import orjson -> ImportError
    try:
        plain = importlib.reload(encode)
        assert plain.ENCODER == "json"
        for obj in AWKWARD:
            assert plain.dumps(obj) == STD(obj)
    finally:
        monkeypatch.undo()
        importlib.reload(encode)
