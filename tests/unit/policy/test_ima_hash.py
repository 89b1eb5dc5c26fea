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
