import io
import json
import os
import subprocess
import sys

import pytest

from tetrahost.cli.tetra import main

EXEC = json.dumps({"process_exec": {"process": {"pid": 5, "binary": "/usr/bin/curl",
                                                "arguments": "https://example.org"}},
                   "node_name": "host1", "time": "2026-11-25T12:00:00Z"})
EXIT = json.dumps({"process_exit": {"process": {"pid": 5, "binary": "/usr/bin/curl",
                                                "arguments": "https://example.org"},
                                    "signal": "SIGKILL"}, "node_name": "host1"})


def run(argv, text):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdin=io.StringIO(text), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_compact_output():
    code, out, err = run(["getevents", "-o", "compact"], f"{EXEC}\n{EXIT}\n")
    assert code == 0
    assert out.splitlines() == [
        "🚀 process host1 /usr/bin/curl https://example.org",
        "💥 exit    host1 /usr/bin/curl https://example.org SIGKILL",
    ]
    assert err == ""


def test_json_passes_lines_through_unchanged():
    code, out, _ = run(["getevents"], f"{EXEC}\n\n{EXIT}\n")
    assert code == 0
    assert out.splitlines() == [EXEC, EXIT]


def test_bad_lines_are_reported_and_skipped():
    text = f"{EXEC}\nnot json\n[1, 2]\n" + '{"process_foo": {}}\n' + f"{EXIT}\n"
    code, out, err = run(["getevents", "-o", "compact"], text)
    assert code == 0
    assert len(out.splitlines()) == 2
    errors = err.splitlines()
    assert len(errors) == 3
    assert errors[0].startswith("tetra: stdin line 2: not valid JSON")
    assert errors[1].startswith("tetra: stdin line 3: not a JSON object")
    assert errors[2].startswith("tetra: stdin line 4: unknown event kind")


def test_timestamps_flag():
    _, out, _ = run(["getevents", "-o", "compact", "--timestamps"], EXEC + "\n")
    assert out.startswith("2026-11-25T12:00:00Z 🚀 process")


class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError()


class _Interrupting(io.StringIO):
    def __iter__(self):
        yield EXEC + "\n"
        raise KeyboardInterrupt


def test_broken_pipe_ends_quietly():
    err = io.StringIO()
    code = main(["getevents", "-o", "compact"], stdin=io.StringIO(EXEC + "\n"),
                stdout=_ClosedPipe(), stderr=err)
    assert code == 0
    assert err.getvalue() == ""


def test_ctrl_c_ends_quietly():
    out, err = io.StringIO(), io.StringIO()
    code = main(["getevents", "-o", "compact"], stdin=_Interrupting(), stdout=out, stderr=err)
    assert code == 130
    assert out.getvalue().startswith("🚀 process")
    assert err.getvalue() == ""


def test_terminal_stdin_is_refused_with_a_hint():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    err = io.StringIO()
    assert main(["getevents"], stdin=Tty(), stdout=io.StringIO(), stderr=err) == 2
    assert "pipe Tetragon JSON" in err.getvalue()


def test_help_describes_getevents(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["getevents", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "-o {json,compact}" in text and "--timestamps" in text and "stdin" in text


def test_usage_error_for_bad_output():
    with pytest.raises(SystemExit) as exc:
        run(["getevents", "-o", "yaml"], "")
    assert exc.value.code == 2


def test_real_pipe_with_non_utf8_binary_and_head():
    # A real process: stdin/stdout are pipes; the binary name holds byte 0xff,
    # escaped as \udcff in the JSON (as older versions wrote it); it is shown
    # as the visible escape \xff; `| head -1` closes the pipe early.
    line = json.dumps({"process_exec": {"process": {"binary": os.fsdecode(b"/tmp/x\xff")}},
                       "node_name": "h"})
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        f"{sys.executable} -m tetrahost.cli.tetra getevents -o compact | head -1",
        shell=True, input=((line + "\n") * 5000).encode(), capture_output=True, text=False, env=env,
    )
    assert proc.returncode == 0
    assert proc.stdout == "🚀 process h /tmp/x\\xff\n".encode()
    assert b"Traceback" not in proc.stderr


def test_tracingpolicy_check_says_what_the_kernel_side_does(tmp_path):
    """The same verdict as `tetrahost policy check`: a valid policy whose
    selector the kernel side cannot evaluate fails the check, naming why."""
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: g\nspec:\n"
                    "  kprobes:\n  - call: sys_openat\n    syscall: true\n    return: true\n"
                    "    args:\n    - {index: 1, type: string}\n    returnArg: {index: 0, type: int}\n")
    code, out, _ = run(["tracingpolicy", "check", str(good)], "")
    assert code == 0 and "OK g: 1 hook" in out and "NOT SUPPORTED" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("name: g", "name: b").replace(
        "returnArg: {index: 0, type: int}", "returnArg: {index: 0, type: file}"))
    code, out, _ = run(["tracingpolicy", "check", str(bad)], "")
    # file:line: field path: message, as the validator reports (the returnArg is on line 12)
    assert code == 1 and (f"kernel side: NOT SUPPORTED: {bad}:12: spec.kprobes[0].returnArg.type: file: the "
                          "kernel side reads integer, sock and socket return values") in out
