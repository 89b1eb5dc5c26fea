"""Attach candidates (every way the probe allows, best first) and the loop
that tries them in turn: a method that does not load or attach is named and
the next one is used; the hook fails only when none works."""
import dataclasses
import textwrap
from types import SimpleNamespace

import pytest

from tetrahost.bpf import BpfError
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook
from tetrahost.sensors import fallback
from tetrahost.sensors.attach import AttachError, attach_candidates, candidates_compiled
from tetrahost.sensors.probe import KernelFeatures

HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
NONE = KernelFeatures(**{f.name: False for f in dataclasses.fields(KernelFeatures)})
TRACING_ONLY = dataclasses.replace(NONE, tracepoint=True, raw_tracepoint=True, send_signal=True, ringbuf=True)
SYMBOLS = {"bpf_lsm_bprm_check_security", "bpf_lsm_file_open"}


def hook_of(spec: str):
    result = load_text(HEADER + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n", file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0].hooks[0]


EXEC_KILL = """
kprobes:
- call: security_bprm_check
  syscall: false
  args: [{index: 0, type: linux_binprm}]
  selectors:
  - matchArgs: [{index: 0, operator: Postfix, values: [/xmrig]}]
    matchActions: [{action: Sigkill}]
"""
FILE_OVERRIDE = """
kprobes:
- call: security_file_open
  syscall: false
  args: [{index: 0, type: file}]
  selectors:
  - matchArgs: [{index: 0, operator: Equal, values: [/etc/shadow]}]
    matchActions: [{action: Override, argError: -1}]
"""
SYSCALL = """
kprobes:
- call: sys_setns
  syscall: true
  args: [{index: 1, type: int}]
"""


def programs(spec, features, enforces=True, overrides=False):
    return [p.program for p in attach_candidates(hook_of(spec), features, enforces, overrides, SYMBOLS)]


def test_exec_hook_candidates_lsm_fmod_ret_kprobe_then_tracepoint():
    assert programs(EXEC_KILL, ALL) == ["th_lsm", "th_fmod_ret", "th_kprobe", "th_exec"]
    # BPF-LSM compiled in but not an active LSM (lsm= without bpf)
    assert programs(EXEC_KILL, dataclasses.replace(ALL, lsm=False)) == ["th_fmod_ret", "th_kprobe", "th_exec"]
    assert programs(EXEC_KILL, TRACING_ONLY) == ["th_exec"]


def test_monitoring_exec_hook_needs_no_fmod_ret():
    assert programs(EXEC_KILL, ALL, enforces=False) == ["th_lsm", "th_kprobe", "th_exec"]


def test_override_candidates_never_include_a_hook_that_cannot_override():
    assert programs(FILE_OVERRIDE, ALL, overrides=True) == ["th_lsm", "th_fmod_ret", "th_kprobe_override"]
    no_lsm = dataclasses.replace(ALL, lsm=False, override_return=False)
    assert programs(FILE_OVERRIDE, no_lsm, overrides=True) == ["th_fmod_ret"]
    with pytest.raises(AttachError, match="Override needs BPF-LSM or fmod_ret"):
        programs(FILE_OVERRIDE, TRACING_ONLY, overrides=True)


def test_syscall_candidates_kprobe_fentry_then_sys_enter():
    assert programs(SYSCALL, ALL, enforces=False) == ["th_kprobe", "th_fentry", "th_sys_enter"]
    assert programs(SYSCALL, TRACING_ONLY, enforces=False) == ["th_sys_enter"]


def test_candidates_compiled_follow_the_policy_mode():
    hook = hook_of(EXEC_KILL)
    enforcing = compile_hook(hook, 1, HostNamespaces.unknown())
    monitoring = compile_hook(hook, 1, HostNamespaces.unknown(), monitor=True)
    assert [p.program for p in candidates_compiled(hook, enforcing, ALL, SYMBOLS)][:2] == ["th_lsm", "th_fmod_ret"]
    assert "th_fmod_ret" not in [p.program for p in candidates_compiled(hook, monitoring, ALL, SYMBOLS)]


# ---- the loop, with the kernel side replaced ------------------------------------------

class FakeObject(str):
    def close(self):
        pass


class FakeSensor:
    def __init__(self, compiled, plan, shared, dispatcher=None, follow_bits=None):
        self.plan = plan

    def start(self, obj):
        if obj == "attach-fails":
            raise BpfError(2, f"attach {self.plan.program}")
        return self


@pytest.fixture
def fake_kernel(monkeypatch):
    """loads: program -> "ok" | "verifier" (refused with a log) | "attach-fails"."""
    loads: dict[str, str] = {}
    calls: list[str] = []

    def load(programs, shared):
        name = programs[0][0]
        calls.append(name)
        if loads.get(name) == "verifier":
            raise BpfError(13, f"load {name}", log=["R0 has smin=-2147483648 should have been in [-4095, 0]"])
        return FakeObject(loads.get(name, "ok"))

    monkeypatch.setattr(fallback, "load_hook_object", load)
    monkeypatch.setattr(fallback, "HookSensor", FakeSensor)
    monkeypatch.setattr(fallback, "_REFUSED", {})
    return loads, calls


def test_a_refused_method_falls_back_to_the_next_and_says_so(fake_kernel):
    loads, calls = fake_kernel
    loads["th_lsm"] = "verifier"
    hook = hook_of(EXEC_KILL)
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    candidates = candidates_compiled(hook, compiled, ALL, SYMBOLS)
    started = fallback.start_hook(compiled, candidates, {})
    assert started.plan.program == "th_fmod_ret"
    assert started.sensor.plan is started.plan
    assert len(started.failed) == 1 and "BPF-LSM bprm_check_security" in started.failed[0]
    assert "should have been in [-4095, 0]" in started.failed[0]
    assert "[fallback; not used: BPF-LSM bprm_check_security" in started.plan.method
    # the verifier's verdict is remembered: the next load does not ask again
    again = fallback.start_hook(compiled, candidates, {})
    assert again.plan.program == "th_fmod_ret"
    assert calls == ["th_lsm", "th_fmod_ret", "th_fmod_ret"]
    assert "refused earlier" in again.failed[0]


def test_an_attach_failure_falls_back_but_is_not_remembered(fake_kernel):
    loads, calls = fake_kernel
    loads["th_lsm"] = "attach-fails"
    hook = hook_of(EXEC_KILL)
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    candidates = candidates_compiled(hook, compiled, ALL, SYMBOLS)
    for _ in range(2):
        assert fallback.start_hook(compiled, candidates, {}).plan.program == "th_fmod_ret"
    assert calls == ["th_lsm", "th_fmod_ret"] * 2


def test_the_hook_fails_only_when_no_method_works(fake_kernel):
    loads, _ = fake_kernel
    hook = hook_of(EXEC_KILL)
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    candidates = candidates_compiled(hook, compiled, ALL, SYMBOLS)
    for plan in candidates:
        loads[plan.program] = "verifier"
    with pytest.raises(BpfError) as info:
        fallback.start_hook(compiled, candidates, {})
    message = str(info.value)
    assert "no attach method worked" in message
    for plan in candidates:
        assert plan.method in message


def test_spares_are_taken_before_loading(fake_kernel):
    _, calls = fake_kernel
    hook = hook_of(EXEC_KILL)
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    candidates = candidates_compiled(hook, compiled, ALL, SYMBOLS)
    started = fallback.start_hook(compiled, candidates, {}, take_spare=lambda plan: "spare")
    assert started.plan.program == "th_lsm" and not started.failed and calls == []


def test_verify_candidates_reports_the_first_that_loads(fake_kernel):
    loads, _ = fake_kernel
    loads["th_lsm"] = "verifier"
    loads["th_fmod_ret"] = "verifier"
    hook = hook_of(EXEC_KILL)
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    result = fallback.verify_candidates(candidates_compiled(hook, compiled, ALL, SYMBOLS))
    assert result.plan.program == "th_kprobe"
    assert [f.split(" (")[0] for f in result.failed] == ["BPF-LSM bprm_check_security", "fmod_ret security_bprm_check"]
    assert "not used: BPF-LSM" in result.plan.method
    loads["th_kprobe"] = loads["th_exec"] = "verifier"
    assert fallback.verify_candidates(candidates_compiled(hook, compiled, ALL, SYMBOLS)).plan is None


# ---- the policy manager and status report the fallback -------------------------------

def test_policy_manager_reports_the_method_used_and_what_failed(monkeypatch, tmp_path):
    from tetrahost.control.status import agent_status
    from tetrahost.runtime import manager as policies

    def fake_start(compiled, candidates, shared, take_spare=None, dispatcher=None, follow_bits=None):
        failed = [f"{candidates[0].method}: load: refused (R0 out of [-4095, 0])"]
        used = fallback.with_failures(candidates[1], failed)
        return fallback.Started(SimpleNamespace(skipped=[], stop=lambda: None, plan=used), used, failed)

    monkeypatch.setattr(policies, "start_hook", fake_start)
    monkeypatch.setattr("tetrahost.sensors.attach.kernel_symbols", lambda: frozenset(SYMBOLS))
    path = tmp_path / "miner.yaml"
    path.write_text(HEADER.replace("name: t", "name: miner") + textwrap.indent(EXEC_KILL.strip("\n"), "  ") + "\n")
    manager = policies.PolicyManager(ALL, HostNamespaces.unknown(), {})
    try:
        (state,) = manager.load_file(str(path))
        assert state.state == "enforcing"
        (hook,) = manager.describe()[0]["hooks"]
        assert hook["active"] and hook["attach"].startswith("fmod_ret security_bprm_check")
        assert hook["fallback_from"] == ["BPF-LSM bprm_check_security (a Sigkill also fails the exec (EPERM), "
                                         "so the program never runs): load: refused (R0 out of [-4095, 0])"]
        from fake_snapshot import snapshot
        status = agent_status(snapshot(policies=manager, features=ALL))
        (fb,) = status["policies"][0]["fallbacks"]
        assert "kprobe security_bprm_check: fmod_ret security_bprm_check" in fb and "not used: BPF-LSM" in fb
    finally:
        manager.stop_all()
