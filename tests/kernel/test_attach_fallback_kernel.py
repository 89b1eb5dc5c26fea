"""The attach fallback against the real kernel: a method that fails here (a
kprobe on a function no kernel has) is named, the next one the probe allows
is used, and it enforces.  Runs on any kernel: the failing method is made to
fail on purpose, the working one follows from the probed features.
"""
from __future__ import annotations

import shutil
import subprocess
import textwrap
import uuid

import pytest

from kernel_expect import exec_kill_method
from tetrahost.bpf import BpfError
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook
from tetrahost.sensors.attach import AttachPlan, candidates_compiled
from tetrahost.sensors.fallback import start_hook, verify_candidates
from tetrahost.sensors.probe import kernel_features

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

TAG = uuid.uuid4().hex[:8]
MINER = f"/tmp/th-fallback-{TAG}"
POLICY = textwrap.dedent(f"""\
    apiVersion: cilium.io/v1alpha1
    kind: TracingPolicy
    metadata:
      name: fallback-{TAG}
    spec:
      kprobes:
      - call: security_bprm_check
        syscall: false
        args: [{{index: 0, type: linux_binprm}}]
        selectors:
        - matchArgs: [{{index: 0, operator: Equal, values: ["{MINER}"]}}]
          matchActions: [{{action: Sigkill}}]
    """)
NOWHERE = AttachPlan("th_kprobe", f"th_no_such_function_{TAG}", f"kprobe th_no_such_function_{TAG}")


@pytest.fixture
def compiled():
    result = load_text(POLICY, file="fallback.yaml")
    assert result.ok, [e.render() for e in result.errors]
    hook = result.policies[0].hooks[0]
    return compile_hook(hook, 1, HostNamespaces.unknown())


@pytest.fixture
def miner():
    shutil.copy2("/usr/bin/true", MINER)
    yield MINER
    subprocess.run(["rm", "-f", MINER])


def test_a_failing_method_falls_back_to_one_that_enforces(compiled, miner):
    candidates = [NOWHERE, *candidates_compiled(compiled.hook, compiled, kernel_features())]
    started = start_hook(compiled, candidates, {})
    try:
        assert started.plan.method.startswith(exec_kill_method()), started.plan.method
        assert started.failed and started.failed[0].startswith(NOWHERE.method)
        assert f"[fallback; not used: {NOWHERE.method}" in started.plan.method
        assert subprocess.run([miner]).returncode == -9          # enforced by the method used
        assert subprocess.run(["/usr/bin/true"]).returncode == 0
    finally:
        started.sensor.stop()
    assert subprocess.run([miner]).returncode == 0                  # detached: runs again


def test_no_working_method_is_an_error_naming_each(compiled):
    with pytest.raises(BpfError) as info:
        start_hook(compiled, [NOWHERE], {})
    assert "no attach method worked" in str(info.value) and NOWHERE.method in str(info.value)


def test_verify_loads_the_preferred_method_without_attaching(compiled, miner):
    result = verify_candidates(candidates_compiled(compiled.hook, compiled, kernel_features()))
    assert result.plan is not None and result.plan.method.startswith(exec_kill_method()), result
    assert result.failed == []
    assert subprocess.run([miner]).returncode == 0                  # verified, never attached
