"""`tetrahost probe` on the kernel the tests run on: what every kernel we
support has (tracepoints, raw tracepoints, ring buffer, bpf_send_signal: all
there since 5.8) must be reported available, and a missing one FAILS; what is
not available must come with a reason that names the errno and the cause the
system shows (kernel config, tracefs, the active LSM list).  Which hook kinds
a kernel has is read from its own evidence (kernel config, tracefs, BTF, the
active LSMs), never assumed from a machine: where the evidence says a kind
must work (Debian's 6.1 and 6.12 guests: all but override_return), it must
be found working and must really fire.  The same file runs on the host and in
the guests of tests/vm.
"""
from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from kernel_expect import not_applicable
from tetrahost.bpf import BpfError, BpfObject
from tetrahost.sensors import probe
from tetrahost.sensors.objects import find_object

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]


@pytest.fixture(scope="module")
def probed():
    features, caps, evidence = probe.probe_cached(refresh=True)    # a real probe, not a kept answer
    print(probe.render_text(caps, evidence))   # in the output of a failing test (and the guest's log)
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


def _trampolines_possible(ev) -> bool:
    """fentry/fexit/fmod_ret/LSM programs attach through BPF trampolines: kernel
    BTF, direct ftrace calls and a readable function list (not restricted)."""
    return (ev.btf is not None and ev.ftrace_functions == "readable"
            and ev.cfg("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y")


# What the kernel's own evidence says must work, per kind.
MUST_WORK_WHEN = {
    "kprobe": lambda ev: ev.cfg("CONFIG_KPROBES") == "y" and bool(ev.kprobe_events),
    "kretprobe": lambda ev: ev.cfg("CONFIG_KPROBES") == "y" and bool(ev.kprobe_events),
    "fentry": _trampolines_possible,
    "fexit": _trampolines_possible,
    "fmod_ret": _trampolines_possible,
    "lsm": lambda ev: (_trampolines_possible(ev) and ev.cfg("CONFIG_BPF_LSM") == "y"
                       and "bpf" in (ev.lsms or ())),
    "uprobe": lambda ev: ev.cfg("CONFIG_UPROBES") == "y",
}


@pytest.mark.parametrize("name", sorted(MUST_WORK_WHEN))
def test_available_where_the_evidence_says_so(probed, name):
    features, caps, ev = probed[0], probed[1], probed[3]
    if not MUST_WORK_WHEN[name](ev):
        not_applicable(f"the kernel's evidence does not promise {name} ({caps[name].detail})")
    cap = caps[name]
    assert cap.available and cap.stage == "ok", cap
    assert getattr(features, name), name
    if name != "lsm":          # every other kind is triggered by the probe: it must have run
        assert cap.fired is True, cap


KINDS = ("kprobe", "kretprobe", "fentry", "fexit", "fmod_ret", "lsm", "override_return")


@pytest.mark.parametrize("name", KINDS)
def test_unavailable_says_why_with_the_errno(probed, name):
    cap = probed[1][name]
    if cap.available:
        assert cap.stage == "ok" and not cap.errno
        return
    if cap.stage == "effect":      # loads and attaches, but the kernel never runs it
        assert name == "lsm" and "not an active LSM" in cap.detail, cap
        return
    assert cap.stage in ("load", "attach"), cap
    assert cap.errno and cap.errno in cap.detail, cap.detail


def test_kprobes_follow_the_kernel_config_and_tracefs(probed):
    caps, ev = probed[1], probed[3]
    if ev.cfg("CONFIG_KPROBES") == "not set":
        assert not caps["kprobe"].available
        assert caps["kprobe"].errno == "ENOENT" and "CONFIG_KPROBES" in caps["kprobe"].detail
        assert "no kprobe_events" in caps["kprobe"].detail
    elif ev.kprobe_events:     # kprobes built in and tracefs offers them: they must work
        assert caps["kprobe"].available and caps["kretprobe"].available, caps["kprobe"]


def test_lsm_is_usable_only_where_bpf_is_an_active_lsm(probed):
    f, caps, ev = probed[0], probed[1], probed[3]
    if ev.lsms is not None and "bpf" not in ev.lsms:
        assert not f.lsm
        if caps["lsm"].stage != "load":       # loads, attaches, but the kernel never calls it
            assert "not an active LSM" in caps["lsm"].detail
    if f.lsm:
        assert "bpf" in ev.lsms


def test_override_return_follows_error_injection(probed):
    caps, ev = probed[1], probed[3]
    if ev.cfg("CONFIG_FUNCTION_ERROR_INJECTION") == "not set" or ev.cfg("CONFIG_BPF_KPROBE_OVERRIDE") == "not set":
        cap = caps["override_return"]
        assert not cap.available and cap.stage == "load", cap
        assert "bpf_override_return" in cap.detail
        assert "CONFIG_FUNCTION_ERROR_INJECTION" in cap.detail or "CONFIG_BPF_KPROBE_OVERRIDE" in cap.detail


def test_features(probed):
    f, caps = probed[0], probed[1]
    assert (f.tracepoint, f.raw_tracepoint, f.ringbuf, f.send_signal, f.btf) == (True,) * 5
    for name in ("kprobe", "kretprobe", "fentry", "fexit", "fmod_ret", "lsm", "override_return", "uprobe"):
        assert getattr(f, name) == caps[name].available, name
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


def test_one_failure_does_not_stop_the_others(monkeypatch):
    # a kind that fails (made to fail here, so on every kernel) comes before
    # send_signal and ringbuf, which must still be probed and found working
    names = list(probe.CAPABILITY_NAMES)
    assert names.index("fentry") < names.index("ringbuf")
    real = probe.load_probe

    def failing(program, *args, **kwargs):
        if program == "probe_fentry":
            raise BpfError(1, "load probe_fentry (made to fail by the test)")
        return real(program, *args, **kwargs)

    monkeypatch.setattr(probe, "load_probe", failing)
    caps = {c.name: c for c in probe.probe_kernel()}
    assert not caps["fentry"].available and caps["fentry"].errno == "EPERM"
    assert caps["ringbuf"].available and caps["send_signal"].available


def test_kprobe_counts_opens(probed):
    if not probed[0].kprobe:
        not_applicable("no kprobes (tetrahost probe)")
    with probe.load_probe("probe_kprobe", tgid=os.getpid()) as obj:
        with obj.program("probe_kprobe").attach_kprobe("security_file_open"):
            before = probe.hits(obj, "kprobe")
            for _ in range(3):
                os.close(os.open("/dev/null", os.O_RDONLY))
            after = probe.hits(obj, "kprobe")
    assert after - before >= 3


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "th-denied-true"
    shutil.copy2("/bin/true", path)
    yield path
    path.unlink(missing_ok=True)


def test_lsm_denies_one_exec(probed, victim):
    """A BPF-LSM program really denies an exec where the probe says BPF-LSM is effective."""
    if not probed[0].lsm:
        not_applicable(f"BPF-LSM not effective ({probed[1]['lsm'].detail})")
    with BpfObject(find_object("smoke")) as obj:
        obj.load()
        obj.map("deny_ino").typed("uint64_t", "uint32_t").update(os.stat(victim).st_ino, 1)
        counts = obj.map("smoke_hits").typed("uint32_t", "uint64_t")
        with obj.program("smoke_deny_exec").attach_lsm():
            with pytest.raises(PermissionError):
                subprocess.run([str(victim)], check=False)
            # through a shell: exec fails with EPERM, the shell exits 126
            assert subprocess.run(["/bin/sh", "-c", str(victim)], capture_output=True).returncode == 126
            assert counts.lookup(1) == 2            # the two denials, nothing else
        assert counts.lookup(0) >= 3                # every exec was checked, others allowed
    # detached: the same file runs again
    assert subprocess.run([str(victim)]).returncode == 0


def test_the_answer_is_kept_for_the_boot_and_tetrahost_probe_renews_it(tmp_path):
    """An agent or `policy check` after a probe uses the kept answer
    (sensors/probe_cache.py: ~5 s per start saved in a QEMU guest): it does
    not probe, so it does not rewrite the file; `tetrahost probe` always does."""
    kept = tmp_path / "probe.json"
    env = dict(os.environ, TETRAHOST_PROBE_CACHE=str(kept))
    cli = [sys.executable, "-m", "tetrahost.cli.main"]
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([*cli, "probe", "-o", "json"], env=env, check=True, capture_output=True, cwd=repo)
    first = kept.stat().st_mtime_ns
    policy = repo / "packaging" / "policies" / "active" / "monitor-sensitive-files.yaml"
    out = subprocess.run([*cli, "policy", "check", str(policy)], env=env, capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    assert kept.stat().st_mtime_ns == first, "policy check probed again instead of using the kept answer"
    subprocess.run([*cli, "probe"], env=env, check=True, capture_output=True, cwd=repo)
    assert kept.stat().st_mtime_ns != first
