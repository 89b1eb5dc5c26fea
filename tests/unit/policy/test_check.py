from policytest_helpers import policy_text
from tetrahost.policy import check_file, render_result, render_results


def test_render_accepted_policy_with_canonical_values(conformance_dir, merged_usr_root):
    result = check_file(conformance_dir / "seed-policies" / "detect-privilege-escalation.yaml",
                        root=merged_usr_root, display_name="dpe.yaml")
    assert render_result(result) == "\n".join([
        "OK detect-privilege-escalation: 1 hook (dpe.yaml, mode enforce)",
        "  kprobe security_bprm_check",
        "    exec hook: matchBinaries matches the calling OR the executed binary",
        "    args: 0:linux_binprm",
        "    selector 0: if binary In /bin/su \u2192 /usr/bin/su, /usr/bin/sudo, /usr/bin/passwd and "
        "Pid namespace NotIn host_ns then Post",
        "    attach method: not probed",
    ])


def test_attach_describer_is_pluggable(conformance_dir):
    result = check_file(conformance_dir / "seed-policies" / "block-cryptominers.yaml")
    text = render_result(result, describe_attach=lambda hook, mode: f"attach method: BPF-LSM for {hook.name}")
    assert "attach method: BPF-LSM for security_bprm_check" in text
    assert "if binary In /usr/bin/xmrig, /tmp/xmrig, /usr/bin/minerd then Sigkill" in text


def test_render_rejected_file_and_summary(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy_text("selectorsMacros: []\nkprobes:\n- call: foo\n  selectors:\n  - matchActions:\n"
                               "    - action: Signal\n      argSig: 99"))
    good = tmp_path / "good.yaml"
    good.write_text(policy_text("options:\n- name: policy-mode\n  value: monitor\nkprobes:\n- call: foo\n"
                                "  selectors:\n  - matchActions:\n    - action: Sigkill"))
    text = render_results([check_file(bad), check_file(good)])
    assert text.splitlines() == [
        f"FAIL {bad}: 2 errors",
        f"  {bad}:6: spec.selectorsMacros: selector macros (spec.selectorsMacros) are not supported by tetrahost yet",
        f"  {bad}:12: spec.kprobes[0].selectors[0].matchActions[0].argSig: 99 is out of range (must be between 1 and 64)",
        f"OK test: 1 hook ({good}, mode monitor)",
        "  kprobe foo",
        "    selector 0: always then Sigkill [not performed: monitor mode]",
        "    attach method: not probed",
        "1 file(s) OK, 1 rejected",
    ]


def test_warnings_are_rendered(conformance_dir):
    path = conformance_dir / "tetragon-examples" / "sandbox" / "linux-namespaces" / "kill_unprivileged_user_namespace.yaml"
    result = check_file(path, display_name="k.yaml")
    assert result.ok
    assert render_result(result).splitlines()[-1] == (
        "  k.yaml:40: spec.kprobes[0].selectors[0].matchActions[0].argError: warning: argError belongs to "
        "Override, it does nothing for Sigkill and is ignored (as in Tetragon)")
