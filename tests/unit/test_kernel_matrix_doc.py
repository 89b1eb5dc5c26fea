"""The kernel matrix's markdown is made from the guests' own results."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))

import kernel_matrix_doc  # noqa: E402


def run_dir(base: Path, name: str, release: str, lsm: str, available: dict, hooks: list) -> Path:
    d = base / name
    d.mkdir()
    (d / "release.txt").write_text(release + "\n")
    (d / "lsm.txt").write_text(lsm + "\n")
    (d / "probe.json").write_text(json.dumps({"capabilities": [{"name": k, "available": v}
                                                               for k, v in available.items()]}))
    (d / "seeds.json").write_text(json.dumps({"hooks": hooks}))
    (d / "junit.xml").write_text('<testsuites><testsuite tests="3" failures="0" errors="0" skipped="1">'
                                 '<testcase classname="a" name="b"><skipped message="not applicable on this '
                                 'kernel: x"/></testcase></testsuite></testsuites>')
    return d


def test_table_cells_come_from_each_run(tmp_path):
    hook = {"policy": "block-cryptominers", "hook": "kprobe security_bprm_check", "verified": True}
    a = run_dir(tmp_path, "6.12", "6.12.118+deb12-amd64", "lockdown,bpf", {"lsm": True, "kprobe": True},
                [{**hook, "method": "BPF-LSM bprm_check_security (why)", "failed": []}])
    b = run_dir(tmp_path, "6.1-nobpflsm", "6.1.0-57-amd64", "lockdown,capability", {"lsm": False, "kprobe": True},
                [{**hook, "method": "fmod_ret security_bprm_check (why) [fallback; not used: BPF-LSM: x]",
                  "failed": ["BPF-LSM bprm_check_security: load: EACCES"]}])
    (tmp_path / "matrix.json").write_text(json.dumps([
        {"name": "6.12", "suite": "vm", "exit": 0, "seconds": 400.2, "results": str(a)},
        {"name": "6.1-nobpflsm", "suite": "lean", "exit": 1, "seconds": 120, "results": str(b)}]))
    text = kernel_matrix_doc.render(tmp_path)
    assert "| 6.12 | 6.12.118+deb12-amd64 | lockdown,bpf | vm | 3 tests: 2 passed" in text
    assert "| PASS | 400 s |" in text and "| FAIL | 120 s |" in text
    assert "| lsm | yes | no |" in text and "| kprobe | yes | yes |" in text and "| fentry | ? | ? |" in text
    assert ("| block-cryptominers: kprobe security_bprm_check | BPF-LSM bprm_check_security | "
            "fmod_ret security_bprm_check (fallback) |") in text
    assert "- 6.1-nobpflsm, block-cryptominers: BPF-LSM bprm_check_security: load: EACCES" in text
