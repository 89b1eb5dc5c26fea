"""imaHash on Post: accepted on LSM hooks with a file/linux_binprm argument
(Tetragon's lsm_bprm_check.yaml), refused elsewhere with file:line: field;
`policy check` and the attach line say why this kernel gives no hash."""
from __future__ import annotations

import types

import pytest

from tetrahost.policy import load_text
from tetrahost.policy.check import render_result
from tetrahost.sensors.attach import AttachError, attach_candidates, ima_hash_note

from policytest_helpers import CONFORMANCE, errors_of, policy_text

LSM = """
lsmhooks:
- hook: "bprm_check_security"
  args:
  - index: 0
    type: "{arg}"
  selectors:
  - matchActions:
    - action: Post
      imaHash: true
"""


def features(**on):
    names = ("tracepoint", "raw_tracepoint", "kprobe", "kretprobe", "fentry", "fexit", "fmod_ret", "lsm",
             "send_signal", "override_return", "ringbuf", "uprobe", "ima_hash")
    return types.SimpleNamespace(**{n: on.get(n, False) for n in names})


def test_tetragon_example_is_accepted_with_the_hash_asked():
    result = load_text((CONFORMANCE / "tetragon-examples" / "lsm_bprm_check.yaml").read_text(), file="l.yaml")
    assert result.ok, [e.render() for e in result.errors]
    post = [a for a in result.policies[0].hooks[0].selectors[0].match_actions if a.action == "Post"]
    assert post[0].ima_hash
    assert "Post with the IMA hash of the file" in render_result(result)


@pytest.mark.parametrize("arg", ["linux_binprm", "file"])
def test_accepted_with_a_file_argument(arg):
    assert errors_of(LSM.format(arg=arg)) == []


def test_refused_without_a_file_argument():
    assert errors_of(LSM.format(arg="int")) == [
        "p.yaml:14: spec.lsmhooks[0].selectors[0].matchActions[0].imaHash: imaHash hashes the hook's file "
        "or linux_binprm argument: declare one in args"]


def test_refused_on_a_kprobe():
    errs = errors_of("""
kprobes:
- call: "security_bprm_check"
  args:
  - index: 0
    type: "linux_binprm"
  selectors:
  - matchActions:
    - action: Post
      imaHash: true
""")
    assert len(errs) == 1 and "imaHash: imaHash is reported on LSM hook events only" in errs[0], errs
    assert errs[0].startswith("p.yaml:14: spec.kprobes[0].selectors[0].matchActions[0].imaHash")


def hook():
    return load_text(policy_text(LSM.format(arg="linux_binprm")), file="p.yaml").policies[0].hooks[0]


def test_no_bpf_lsm_the_hook_cannot_attach_and_says_why_no_hash():
    with pytest.raises(AttachError) as exc:
        attach_candidates(hook(), features(), enforces=False, overrides=False)
    assert "imaHash not available here: it needs BPF-LSM, which is not usable on this kernel" in str(exc.value)


def test_bpf_lsm_without_ima_helper_attaches_and_says_no_hash():
    (plan,) = attach_candidates(hook(), features(lsm=True), enforces=False, overrides=False)
    assert plan.method.startswith("BPF-LSM bprm_check_security; imaHash not available here: this kernel "
                                  "gives BPF programs no IMA hash")
    assert plan.method.endswith("events carry no ima_hash")


def test_a_hook_without_ima_hash_has_no_note():
    h = load_text(policy_text(LSM.format(arg="linux_binprm").replace("      imaHash: true\n", "")),
                  file="p.yaml").policies[0].hooks[0]
    assert ima_hash_note(h, features(lsm=True)) == ""


def test_with_the_ima_helper_the_sleepable_program_joins_the_plan():
    plan, plain = attach_candidates(hook(), features(lsm=True, ima_hash=True), enforces=False, overrides=False)
    # attached before th_lsm (start() attaches the second program first), so it runs after it
    assert plan.programs == (("th_lsm", "bprm_check_security"), ("th_ima_bprm", "bprm_check_security"))
    assert plan.method == ("BPF-LSM bprm_check_security; imaHash from sleepable BPF-LSM "
                           "bprm_check_security (bpf_ima_file_hash)")
    # next, should the hook not take a sleepable program: the same without it, saying so
    assert plain.programs == (("th_lsm", "bprm_check_security"),)
    assert "imaHash not available here: the sleepable IMA program did not load or attach" in plain.method


def test_a_file_hook_gets_the_file_program():
    h = load_text(policy_text(LSM.format(arg="file").replace("bprm_check_security", "file_open")),
                  file="p.yaml").policies[0].hooks[0]
    plan = attach_candidates(h, features(lsm=True, ima_hash=True), enforces=False, overrides=False)[0]
    assert plan.programs[1] == ("th_ima_file", "file_open")


def test_a_file_argument_not_first_is_said_not_hashed():
    text = policy_text(LSM.format(arg="int").replace(
        '    type: "int"\n', '    type: "int"\n  - index: 1\n    type: "file"\n'))
    result = load_text(text, file="p.yaml")
    assert not result.errors, [e.render() for e in result.errors]
    warnings = [w.render() for w in result.warnings]
    assert any("tetrahost hashes the hook's first argument (index 0)" in w for w in warnings), warnings
    (plan,) = attach_candidates(result.policies[0].hooks[0], features(lsm=True, ima_hash=True),
                                enforces=False, overrides=False)
    assert plan.programs == (("th_lsm", "bprm_check_security"),)
    assert "imaHash not available here: tetrahost hashes the hook's first argument" in plan.method


def test_the_linux_binprm_argument_gets_no_warning():
    result = load_text(policy_text(LSM.format(arg="linux_binprm")), file="p.yaml")
    assert not [w for w in result.warnings if "imaHash" in w.render()]
