"""Host-side checks of the built packages (`make deb rpm` first; `make test-packaging` does).

What is checked here, without booting anything: the files each package puts
where the agent looks for them, conffiles, dependencies, maintainer scripts,
lint, the man pages against --help, the unit's hardening, and that only
observation policies ship active.  The .deb in a running systemd is
tests/vm/scenarios/deb_e2e.sh (tests/packaging/e2e_systemd.sh).
"""
from __future__ import annotations

import glob
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
PKG = REPO / "packaging"
SEEDS = REPO.parent / "shared" / "conformance" / "seed-policies"   # beside the clone in CI


def run(*cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if check and proc.returncode:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def newest(pattern: str) -> pathlib.Path:
    found = sorted(glob.glob(str(REPO / pattern)), key=lambda p: pathlib.Path(p).stat().st_mtime)
    if not found:
        pytest.skip(f"no {pattern}: run `make deb rpm` (or make test-packaging)")
    return pathlib.Path(found[-1])


@pytest.fixture(scope="module")
def deb() -> pathlib.Path:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb missing")
    return newest("build/deb/tetrahost_*.deb")


@pytest.fixture(scope="module")
def rpm_file() -> pathlib.Path:
    if not shutil.which("rpm"):
        pytest.skip("rpm missing: scripts/install-packaging-deps.sh")
    return newest("build/rpm/RPMS/*/tetrahost-*.rpm")


def bpf_objects_used() -> set[str]:
    """Names passed to find_object() anywhere in the agent: the objects a package must ship."""
    names = set()
    for path in (REPO / "tetrahost").rglob("*.py"):
        names |= set(re.findall(r'find_object\("(\w+)"\)', path.read_text()))
    assert names, "no find_object() calls found: did the lookup change?"
    return names


# Paths both packages must install (the rpm keeps Python in a private directory).
COMMON = ["/usr/bin/tetrahost", "/usr/bin/tetra", "/etc/tetragon/tetrahost.toml",
          "/etc/tetragon/policies.d/detect-privilege-escalation.yaml",
          "/etc/tetragon/policies.d/monitor-sensitive-files.yaml",
          "/usr/share/doc/tetrahost/examples/block-cryptominers.yaml",
          "/usr/share/doc/tetrahost/examples/detect-container-escape.yaml",
          "/usr/share/man/man8/tetrahost.8.gz", "/usr/share/man/man8/tetra.8.gz",
          "/usr/share/tetrahost/prometheus/tetrahost-rules.yml",
          "/usr/share/tetrahost/grafana/tetrahost-dashboard.json",
          "/usr/share/tetrahost/elasticsearch/tetrahost-index-template.json"]


def test_deb_contents(deb):
    listing = {line.split()[-1].lstrip(".") for line in run("dpkg-deb", "-c", str(deb)).splitlines()}
    expected = COMMON + [f"/usr/lib/tetrahost/bpf/{n}.bpf.o" for n in bpf_objects_used()] + [
        "/lib/systemd/system/tetrahost.service",
        "/usr/lib/python3/dist-packages/tetrahost/_libbpf.abi3.so"]
    assert not [p for p in expected if p not in listing]
    assert not [p for p in listing if "smoke" in p or "__pycache__" in p]


def test_deb_conffiles_and_depends(deb):
    conffiles = run("dpkg-deb", "-I", str(deb), "conffiles")
    for path in ("/etc/tetragon/tetrahost.toml", "/etc/tetragon/policies.d/monitor-sensitive-files.yaml",
                 "/etc/tetragon/policies.d/detect-privilege-escalation.yaml"):
        assert path in conffiles
    depends = run("dpkg-deb", "-f", str(deb), "Depends")
    for dep in ("python3 (>= 3.11)", "python3-yaml", "python3-prometheus-client", "python3-sdnotify",
                "libbpf1", "python3-cffi-backend"):
        assert dep in depends, depends


def test_deb_entry_points_use_system_python(deb, tmp_path):
    run("dpkg-deb", "-x", str(deb), str(tmp_path))
    for name in ("tetrahost", "tetra"):
        assert (tmp_path / "usr/bin" / name).read_text().splitlines()[0] == "#!/usr/bin/python3"


def test_deb_maintainer_scripts(deb, tmp_path):
    run("dpkg-deb", "-e", str(deb), str(tmp_path))
    prerm = (tmp_path / "prerm").read_text()
    postrm = (tmp_path / "postrm").read_text()
    postinst = (tmp_path / "postinst").read_text()
    assert "deb-systemd-invoke stop" in prerm          # remove stops the agent
    assert "tetrahost.service" in postinst and "deb-systemd-helper" in postinst
    assert "purge" in postrm and "/var/lib/tetrahost" in postrm


def test_lintian_clean(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian missing")
    out = run("lintian", "--fail-on", "error,warning", str(deb), check=False)
    assert not re.search(r"^[EW]: ", out, re.M), out


def test_rpm_contents(rpm_file):
    listing = set(run("rpm", "-qlp", str(rpm_file)).split())
    expected = COMMON + [f"/usr/lib/tetrahost/bpf/{n}.bpf.o" for n in bpf_objects_used()] + [
        "/usr/lib/systemd/system/tetrahost.service",
        "/usr/lib/tetrahost/python/tetrahost/_libbpf.abi3.so"]
    assert not [p for p in expected if p not in listing]
    config = set(run("rpm", "-qcp", str(rpm_file)).split())
    assert "/etc/tetragon/tetrahost.toml" in config
    assert "/etc/tetragon/policies.d/monitor-sensitive-files.yaml" in config
    # %config(noreplace): a local edit survives an upgrade
    flags = run("rpm", "-qp", "--queryformat", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", str(rpm_file))
    assert re.search(r"^/etc/tetragon/tetrahost.toml \S*n", flags, re.M), flags


def test_rpm_scripts(rpm_file):
    scripts = run("rpm", "-qp", "--scripts", str(rpm_file))
    assert re.search(r"preuninstall.*\n(.*\n)*.*disable --now tetrahost.service", scripts)
    assert "try-restart tetrahost.service" in scripts
    assert "daemon-reload" in scripts
    for part in re.split(r"^\S.*scriptlet.*:$", scripts, flags=re.M)[1:]:
        subprocess.run(["sh", "-n"], input=part, text=True, check=True)


def test_rpm_installs_into_scratch_root(rpm_file, tmp_path):
    # --nodeps: the Debian host's rpm database knows no python3 or libbpf.
    # --noscripts: the scratch root has no /bin/sh or systemctl to run them
    # with (their syntax is checked above, their effect by deb_e2e.sh's twins).
    root = tmp_path / "root"
    run("rpm", "-i", "--root", str(root), "--nodeps", "--noscripts", str(rpm_file))
    assert (root / "usr/lib/tetrahost/bpf/process.bpf.o").is_file()
    assert "tetrahost" in run("rpm", "--root", str(root), "-qa")
    # The rpm's launcher finds the private module directory.
    launcher = (root / "usr/bin/tetrahost").read_text()
    assert 'sys.path.insert(0, "/usr/lib/tetrahost/python")' in launcher
    run("rpm", "-e", "--root", str(root), "--noscripts", "tetrahost")
    assert not (root / "usr/lib/tetrahost/bpf/process.bpf.o").exists()


def test_rpmlint_clean(rpm_file):
    if not shutil.which("rpmlint"):
        pytest.skip("rpmlint missing")
    out = run("rpmlint", "-c", "packaging/rpm/rpmlint.toml", "-r", "packaging/rpm/tetrahost.rpmlintrc",
              str(rpm_file), check=False)
    assert "0 errors, 0 warnings" in out, out


def test_man_pages_cover_help():
    """Every option of `tetrahost run` and every tetra command is in the man pages."""
    run_help = run(str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else "python3",
                   "-m", "tetrahost.cli.main", "run", "--help")
    page = (PKG / "man/tetrahost.8").read_text().replace("\\-", "-")
    missing = [o for o in set(re.findall(r"(--[a-z][a-z-]+)", run_help)) if o not in page]
    assert not missing, f"tetrahost.8 lacks {missing}"
    tetra_page = (PKG / "man/tetra.8").read_text().replace("\\-", "-")
    for command in ("status", "tracingpolicy", "getevents", "list", "add", "delete", "check"):
        assert command in tetra_page


def test_unit_hardening():
    unit = PKG / "systemd/tetrahost.service"
    text = unit.read_text()
    for line in ("Type=notify", "Restart=on-failure", "LimitMEMLOCK=infinity", "LimitNOFILE=65536",
                 "RuntimeDirectory=tetrahost",
                 "StateDirectory=tetrahost", "LogsDirectory=tetragon", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=", "PrivateTmp=yes",
                 "LogRateLimitIntervalSec=0"):     # journald must not discard events uncounted
        assert re.search(rf"^{re.escape(line)}", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(r"^CapabilityBoundingSet=CAP_", text, re.M)
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing")
    out = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(unit), check=False)
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert score <= 5.0, out[-2000:]


def test_only_observation_policies_ship_active():
    """A fresh install must not kill anything the operator did not ask for."""
    paths = list((PKG / "policies/active").glob("*.yaml"))
    assert paths, "no active policy ships: the check below would pass vacuously"
    for path in paths:
        text = path.read_text()
        doc = yaml.safe_load(text)
        actions = {a.get("action") for kind in ("kprobes", "tracepoints", "lsmhooks")
                   for hook in doc["spec"].get(kind, []) for sel in hook.get("selectors", [])
                   for a in sel.get("matchActions", [])}
        assert actions <= {"Post", None}, f"{path.name} would enforce: {actions}"


def test_policies_are_the_seed_files():
    if not SEEDS.is_dir():
        pytest.skip(f"no {SEEDS}")
    shipped = {p.name: p.read_text() for p in PKG.glob("policies/*/*.yaml")}
    seeds = {p.name: p.read_text() for p in SEEDS.glob("*.yaml")}
    assert shipped == seeds


def test_bpf_objects_listed_in_both_packagings():
    install = (PKG / "deb/tetrahost.install").read_text()
    spec = (PKG / "rpm/tetrahost.spec").read_text()
    for name in bpf_objects_used():
        assert f"build/bpf/{name}.bpf.o" in install
        assert f"build/bpf/{name}.bpf.o" in spec
