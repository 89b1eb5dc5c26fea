"""`tetrahost probe` on this machine's kernel (6.18-fc, see KERNELS.md): what is
known to work must be reported available, and what is known not to work must
come with a reason that names the errno and the cause."""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest

from tetrahost.sensors import probe

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]


@pytest.fixture(scope="module")
def probed():
    features, caps, evidence = probe.probe_cached()
    return features, {c.name: c for c in caps}, caps, evidence


@pytest.mark.parametrize("name", ["tracepoint", "raw_tracepoint", "ringbuf", "send_signal"])
def test_available_here(probed, name):
    cap = probed[1][name]
    assert cap.available, cap
    assert cap.stage == "ok"


@pytest.mark.parametrize("name", ["raw_tracepoint", "ringbuf", "send_signal"])
def test_fired_here(probed, name):
    # these probes trigger their program from the probing process itself
    assert probed[1][name].fired is True


@pytest.mark.parametrize(("name", "errno", "cause"), [
    ("kprobe", "ENOENT", "CONFIG_KPROBES"),
    ("kretprobe", "ENOENT", "CONFIG_KPROBES"),
    ("fentry", "EPERM", "before verification"),
    ("fmod_ret", "EPERM", "before verification"),
    ("lsm", "EPERM", "before verification"),
    ("override_return", "EINVAL", "bpf_override_return"),
])
def test_unavailable_here_with_reason(probed, name, errno, cause):
    cap = probed[1][name]
    assert not cap.available
    assert cap.errno == errno
    assert errno in cap.detail and cause in cap.detail, cap.detail


def test_kprobe_reason_has_tracefs_evidence(probed):
    assert "no kprobe_events" in probed[1]["kprobe"].detail


def test_features(probed):
    f = probed[0]
    assert (f.tracepoint, f.raw_tracepoint, f.ringbuf, f.send_signal, f.btf) == (True,) * 5
    assert not any((f.kprobe, f.kretprobe, f.fentry, f.fmod_ret, f.lsm, f.override_return))
    assert probe.kernel_features() is f          # cached: the daemon probes once


def test_evidence(probed):
    ev = probed[3]
    assert ev.release == os.uname().release
    assert ev.btf == "/sys/kernel/btf/vmlinux"
    assert ev.lockdown in ("none", "integrity", "confidentiality")
    assert ev.lsms and "capability" in ev.lsms


def test_text_one_line_per_capability(probed):
    caps, ev = probed[2], probed[3]
    lines = probe.render_text(caps, ev).splitlines()
    assert lines[0].startswith(f"kernel {ev.release}")
    body = lines[1:]
    assert len(body) == len(probe.CAPABILITY_NAMES)
    for line, name in zip(body, probe.CAPABILITY_NAMES):
        word, verdict = line.split()[:2]
        assert word == name and verdict in ("yes", "no")


def run_cli(*argv):
    """The subcommand through its own parser (main.py's list is the lead's)."""
    from tetrahost.cli import probe_cmd

    parser = argparse.ArgumentParser()
    probe_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["probe", *argv])
    out, saved = io.StringIO(), sys.stdout
    sys.stdout = out
    try:
        rc = args.func(args)
    finally:
        sys.stdout = saved
    return rc, out.getvalue()


def test_cli_json_has_every_capability():
    rc, out = run_cli("-o", "json")
    assert rc == 0
    doc = json.loads(out)
    assert [c["name"] for c in doc["capabilities"]] == list(probe.CAPABILITY_NAMES)
    for cap in doc["capabilities"]:
        assert set(cap) >= {"name", "available", "detail", "method"}
        assert cap["available"] or cap["detail"]
    assert doc["kernel"]["release"] == os.uname().release
    assert set(doc["features"]) >= set(probe.CAPABILITY_NAMES)


def test_cli_text():
    rc, out = run_cli()
    assert rc == 0 and "kprobe " in out


def test_cli_not_root_message(tmp_path):
    # a fresh process without root: the message, exit 1, no traceback
    code = ("import argparse,sys; from tetrahost.cli import probe_cmd; p=argparse.ArgumentParser(); "
            "probe_cmd.register(p.add_subparsers()); a=p.parse_args(['probe']); sys.exit(a.func(a))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          user=65534, group=65534, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    # nothing else: no traceback, no failed mount attempts
    assert proc.stderr.strip() == "tetrahost probe needs root (CAP_BPF/CAP_SYS_ADMIN) to load test programs"


def test_one_failure_does_not_stop_the_others(probed):
    # fentry (before) fails and send_signal/ringbuf (after) still work
    names = list(probe.CAPABILITY_NAMES)
    caps = probed[1]
    assert names.index("fentry") < names.index("ringbuf")
    assert not caps["fentry"].available and caps["ringbuf"].available
