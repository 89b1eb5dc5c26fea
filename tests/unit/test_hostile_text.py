"""Hostile process names and arguments: JSON stays valid UTF-8 and gives the
exact bytes back; compact lines (tetra getevents -o compact, stdout compact)
never let them drive the terminal."""
from __future__ import annotations

import io
import json
import random
import re

from tetrahost.cli.tetra import main as tetra_main
from tetrahost.events.meta import EventMeta
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import Caps, Creds, ExecRecord
from tetrahost.events.text import bytes_to_text, os_text, text_to_bytes
from tetrahost.export.compact import format_event, format_line
from tetrahost.export.sinks import LineSink
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.export.terminal import terminal_text

HOST = tuple(4026531830 + i for i in range(10))
META = EventMeta(kind="process_exec", pid=1, binary="", exec_id="e", ktime=0)
# What must never reach a terminal raw: C0, DEL, C1, bidi controls, line separators, surrogates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")

HOSTILE = [
    b"\x1b[2J\x1b[H",                       # clear the screen
    b"\x1b]0;owned\x07",                     # set the window title
    b"x\n\xf0\x9f\x9a\x80 process host1 /usr/bin/forged",   # forge a second event line
    b"ok\rSPOOF",                            # overwrite the line start
    b"bell\x07",
    b"\xc2\x9b31m",                          # C1 CSI (8-bit terminals)
    b"abc\xe2\x80\xaetxt.exe",               # right-to-left override
    b"bad\xff\xfeutf8\xc3",                  # not UTF-8
    b"\x7fdel",
]


def exec_line(binary: bytes, args: list[bytes], cwd: bytes = b"/") -> str:
    cache = ProcessCache("host1")
    r = TetragonJSON("host1", HostNamespaces(HOST), boot_offset_ns=0)
    rec = ExecRecord(ktime=10**9, pid=7, tid=7, ppid=0, auid=0, parent_ktime=0, cgroup_id=0,
                     creds=Creds(0, 0, 0, 0, 0, 0, 0, 0), caps=Caps(0, 0, 0), ns=HOST,
                     binary=binary, args=args, cwd=cwd)
    return r.render(cache.handle(rec))


# ---- the exported text of bytes -------------------------------------------------

def test_documented_examples():
    assert bytes_to_text(b"/usr/bin/curl") == "/usr/bin/curl"
    assert bytes_to_text(b"a\xffb") == "a\\xffb"
    assert bytes_to_text(b"caf\xc3\xa9") == "caf\u00e9"                   # valid UTF-8 unchanged
    assert bytes_to_text(b"\\xff") == "\\x5cxff"                          # a literal that looks escaped
    assert bytes_to_text(b"\\x5c") == "\\x5cx5c"
    assert bytes_to_text(b"dev-disk-by\\x2duuid") == "dev-disk-by\\x2duuid"   # systemd escapes untouched
    assert bytes_to_text(b"a\\.b\\\\c") == "a\\.b\\\\c"                     # regexes untouched
    assert bytes_to_text(b"\xed\xa0\x80") == "\\xed\\xa0\\x80"             # encoded surrogate: invalid
    assert os_text("/sys/\udcff\\x2d") == "/sys/\\xff\\x2d"


def test_random_bytes_round_trip_and_are_valid_utf8():
    rng = random.Random(20240501)
    pieces = [b"\\", b"x", b"5", b"c", b"8", b"f", b"F", b"\xff", b"\x80", b"\xc3", b"\xa9", b"\xe2\x82\xac",
              b"\xf0\x9f\x9a\x80", b"\xed\xa0\x80", b"a", b"\x00", b"\x1b", b"\n"]
    for _ in range(50_000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        text = bytes_to_text(raw)
        text.encode("utf-8")                                           # strict: no lone surrogates
        assert text_to_bytes(text) == raw, (raw, text)
    for _ in range(2000):
        raw = rng.randbytes(rng.randint(0, 64))
        assert text_to_bytes(bytes_to_text(raw)) == raw


def test_json_lines_are_strict_utf8_and_give_the_bytes_back():
    rng = random.Random(7)
    for i in range(500):
        binary = b"/tmp/" + rng.randbytes(rng.randint(1, 40)).replace(b"\0", b"")
        cwd = rng.randbytes(rng.randint(0, 20)).replace(b"\0", b"") or b"/"
        arg = rng.randbytes(rng.randint(1, 20)).replace(b"\0", b"")
        for bad in (b" ", b"\t", b"\n", b'"'):                       # unquoted: one argument as-is
            arg = arg.replace(bad, b"_")
        line = exec_line(binary, [arg] if arg else [], cwd)
        data = line.encode("utf-8")
        assert data.decode("utf-8", "strict") == line
        decoded = json.loads(data)
        json.dumps(decoded, ensure_ascii=False).encode("utf-8", "strict")   # no lone surrogates
        p = decoded["process_exec"]["process"]
        assert text_to_bytes(p["binary"]) == binary
        assert text_to_bytes(p["cwd"]) == cwd
        if arg:
            assert text_to_bytes(p["arguments"]) == arg


def test_hostile_bytes_in_json():
    for raw in HOSTILE:
        line = exec_line(b"/tmp/" + raw, [raw], raw)
        assert "\n" not in line and "\r" not in line and line.isascii()
        p = json.loads(line)["process_exec"]["process"]
        assert text_to_bytes(p["binary"]) == b"/tmp/" + raw
        assert text_to_bytes(p["cwd"]) == raw


# ---- compact lines ---------------------------------------------------------------

def assert_terminal_safe(text: str, lines: int = 1) -> None:
    assert text.count("\n") == 0, text
    assert UNSAFE.search(text) is None, repr(text)


def test_compact_escapes_each_hostile_string():
    for raw in HOSTILE:
        line = exec_line(b"/tmp/" + raw, [raw, b"--x"], raw)
        for shown in (format_line(line), format_event(json.loads(line))):
            assert_terminal_safe(shown)
            assert shown.startswith("🚀 process host1 /tmp/")


def test_compact_escape_forms():
    line = exec_line(b"/tmp/t\x1b]0;owned\x07", [b"a\nb\rc\td", b"\xff\\n"])
    shown = format_line(line)
    assert shown == "🚀 process host1 /tmp/t\\x1b]0;owned\\x07 \"a\\nb\\rc\\td\" \\xff\\x5cn"
    assert terminal_text("rtl\u202eexe \x9b") == "rtl\\xe2\\x80\\xaeexe \\xc2\\x9b"
    assert terminal_text("x\x7f") == "x\\x7f"
    assert terminal_text("dev\\x2d") == "dev\\x5cx2d"                 # a literal reads unambiguously
    assert terminal_text("/usr/bin/curl -H a\\.b") == "/usr/bin/curl -H a\\.b"


def test_compact_with_color_has_only_our_escape_sequences():
    ev = json.loads(exec_line(b"/tmp/\x1b[31mred", [b"\x1b[2J"]))
    shown = format_event(ev, color=True)
    assert "\x1b[2J" not in shown and "\x1b[31mred" not in shown
    assert re.sub(r"\x1b\[\d+m", "", shown).count("\x1b") == 0


def test_compact_fields_outside_process_and_keys_are_escaped():
    ev = {"process_kprobe": {"process": {"binary": "/bin/x"}, "function_name": "sys_openat",
                             "args": [{"int_arg": 1}, {"string_arg": "/etc/\x1b[2Jpasswd\n"}],
                             "action": "KPROBE_ACTION_SIGKILL"},
          "node_name": "h\x07", "time": "t"}
    shown = format_event(ev)
    assert_terminal_safe(shown)
    assert "/etc/\\x1b[2Jpasswd\\n" in shown and "h\\x07" in shown
    throttle = {"process_throttle": {"type": "THROTTLE_START", "cgroup": "/a\nb"}, "node_name": "h"}
    assert_terminal_safe(format_event(throttle))


def test_stdout_compact_sink_writes_one_safe_line_per_event():
    out = io.StringIO()
    sink = LineSink(out, "stdout", owns_stream=False, compact=True)
    batch = [(exec_line(b"/tmp/" + raw, [raw]), META) for raw in HOSTILE]
    sink.write_events(batch)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(HOSTILE)
    for shown in lines[:-1]:
        assert_terminal_safe(shown)
        assert shown.startswith("🚀 process host1 /tmp/")
    assert sink.stats.events == len(HOSTILE)


def run_tetra(argv: list[str], stdin_text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = tetra_main(argv, stdin=io.StringIO(stdin_text), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_tetra_getevents_compact_and_json_from_hostile_input():
    ours = [exec_line(b"/tmp/" + raw, [raw]) for raw in HOSTILE]
    # Foreign lines: raw UTF-8 controls inside strings, bytes read with
    # surrogateescape, a \r between tokens, a \u escape of a lone surrogate.
    foreign = ['{"process_exec":{"process":{"binary":"/tmp/\u009b2J\u202e\x7f"}},"node_name":"h"}',
               '{"process_exec":{"process":{"binary":"/tmp/\udcff\udcfe"}},\r"node_name":"h"}',
               '{"process_exec":{"process":{"binary":"/tmp/\\ud800x"}},"node_name":"h"}']
    text = "\n".join(ours + foreign) + "\n"
    code, out, err = run_tetra(["getevents", "-o", "compact"], text)
    assert code == 0 and err == ""
    shown = out.split("\n")[:-1]
    assert len(shown) == len(ours) + len(foreign)
    for s in shown:
        assert_terminal_safe(s)
    assert shown[-2] == "🚀 process h /tmp/\\xff\\xfe"
    assert shown[-1] == "🚀 process h /tmp/\\xed\\xa0\\x80x"

    code, out, err = run_tetra(["getevents", "-o", "json"], text)
    assert code == 0 and err == ""
    printed = out.split("\n")[:-1]
    assert printed[:len(ours)] == ours                                 # our lines pass through as-is
    for s in printed:
        assert UNSAFE.search(s) is None and s.isascii()
        s.encode("utf-8", "strict")
        json.loads(s)
    assert json.loads(printed[-2])["process_exec"]["process"]["binary"] == "/tmp/\\xff\\xfe"
    assert text_to_bytes(json.loads(printed[-2])["process_exec"]["process"]["binary"]) == b"/tmp/\xff\xfe"


def test_tetra_error_messages_are_escaped():
    code, out, err = run_tetra(["getevents", "-o", "compact"], '{"\\u001b]0;t\\u0007x":1}\n')
    assert code == 0 and out == ""
    assert "\x1b" not in err and "\\x1b]0;t\\x07x" in err


def test_plain_line_is_printable_ascii_without_a_backslash():
    from tetrahost.export.terminal import is_plain_line
    for code in range(0x300):
        ch = chr(code)
        expected = 0x20 <= code <= 0x7E and ch != "\\"
        assert is_plain_line(f'{{"a":"x{ch}y"}}') is expected, hex(code)
    assert is_plain_line("") and is_plain_line('{"a":"b c"}')
    assert not is_plain_line('{"a":"\\u001b"}') and not is_plain_line('{"a":"\udcff"}')
