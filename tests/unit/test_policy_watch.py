"""PolicyDirectory on a temp dir with a manager that loads nothing into the kernel."""
import os
import pathlib
import time

import pytest

from tetrahost.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, parse_events
from tetrahost.policy.load import load_text
from tetrahost.runtime.policy_files import PolicyFiles, PolicyRejected
from tetrahost.runtime.reconciler import PolicyDirectory, is_policy_name
from tetrahost.runtime.manager import PolicyLoadFailed, ReloadCounters

# Sigkill on exec of /tmp/xmrig, {name} to fill in (tests/policies/kill-exec.yaml.in).
POLICY = (pathlib.Path(__file__).resolve().parents[1] / "policies/kill-exec.yaml.in").read_text().replace(
    "{targets}", '["/tmp/xmrig"]')


class State:
    def __init__(self, policy):
        self.policy, self.file, self.state = policy, policy.file, "enforcing"


class FakeManager:
    def __init__(self):
        self.policies, self.reloads, self.errors, self.log = {}, ReloadCounters(), {}, []

    def names_from(self, path):
        return [n for n, s in self.policies.items() if s.file == path]

    def apply_file(self, path, text, parsed=None):
        result = parsed if parsed is not None else load_text(text, file=path)
        conflicts = [f'policy "{p.name}" is defined in both {self.policies[p.name].file} and {path}'
                     for p in result.policies if p.name in self.policies and self.policies[p.name].file != path]
        problems = [e.render() for e in result.errors] + conflicts
        if problems:
            self.reloads.failed += 1
            self.errors[path] = problems
            raise PolicyLoadFailed(path, problems, name_conflict=bool(conflicts))
        for n in self.names_from(path):
            del self.policies[n]
        states = [State(p) for p in result.policies]
        self.policies.update((s.policy.name, s) for s in states)
        self.reloads.ok += 1
        self.log.append(("apply", os.path.basename(path)))
        return states

    def begin_apply(self, path, text, parsed=None):
        return FakeJob(self, path, text, parsed)

    def unload_file(self, path):
        names = self.names_from(path)
        for n in names:
            del self.policies[n]
        self.log.append(("unload", os.path.basename(path)))
        return names

    def purge_retired(self):
        pass


class FakeJob:
    """ApplyJob's interface: the whole load in the first step."""
    def __init__(self, manager, path, text, parsed):
        self.args, self.manager, self.states, self.error = (path, text, parsed), manager, [], None

    def step(self):
        try:
            self.states = self.manager.apply_file(*self.args)
        except PolicyLoadFailed as exc:
            self.error = exc
        return True

    def cancel(self):
        pass


@pytest.fixture
def pd(tmp_path):
    d = PolicyDirectory(str(tmp_path / "policies.d"), debounce=0.05, manager=FakeManager())
    d.start()
    yield d
    d.stop()


def settle(d, wait=0.3):
    """Run what the agent loop would: read inotify, then fire the debounce timer."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        d.on_inotify()
        time.sleep(0.01)
    d.on_timer()


def test_names():
    assert is_policy_name("a.yaml") and is_policy_name("b.yml")
    for n in ("a.yaml~", ".a.yaml", ".#a.yaml", "a.yaml.swp", "a.json", "a", ""):
        assert not is_policy_name(n)


def test_parse_inotify_events():
    import struct
    raw = struct.pack("iIII", 1, IN_CLOSE_WRITE, 0, 16) + b"a.yaml".ljust(16, b"\0")
    raw += struct.pack("iIII", 1, IN_MOVED_TO, 7, 0)
    (a, b) = parse_events(raw)
    assert (a.name, a.mask, b.name, b.cookie) == ("a.yaml", IN_CLOSE_WRITE, "", 7)


def test_directory_is_created_and_scanned(tmp_path):
    path = tmp_path / "x" / "policies.d"
    d = PolicyDirectory(str(path), manager=FakeManager())
    d.start()
    d.stop()
    assert path.is_dir()


def test_create_edit_rename_delete(pd):
    p = os.path.join(pd.path, "a.yaml")
    with open(p, "w") as f:
        f.write(POLICY.format(name="one"))
    settle(pd)
    assert list(pd.manager.policies) == ["one"]
    with open(p + ".tmp", "w") as f:     # not a policy name: ignored until renamed
        f.write(POLICY.format(name="two"))
    os.rename(p + ".tmp", p)
    settle(pd)
    assert list(pd.manager.policies) == ["two"]
    os.rename(p, os.path.join(pd.path, "b.yml"))
    settle(pd)
    assert [(n, os.path.basename(s.file)) for n, s in pd.manager.policies.items()] == [("two", "b.yml")]
    os.unlink(os.path.join(pd.path, "b.yml"))
    settle(pd)
    assert pd.manager.policies == {}


def test_unchanged_content_is_not_reloaded_and_bursts_coalesce(pd):
    p = os.path.join(pd.path, "a.yaml")
    for _ in range(5):
        with open(p, "w") as f:
            f.write(POLICY.format(name="one"))
    settle(pd)
    with open(p, "w") as f:
        f.write(POLICY.format(name="one"))
    settle(pd)
    assert pd.manager.log == [("apply", "a.yaml")]


def test_half_written_file_waits_for_close(pd):
    p = os.path.join(pd.path, "a.yaml")
    text = POLICY.format(name="one")
    with open(p, "w") as f:
        f.write(text[:40])
        f.flush()
        settle(pd)
        assert pd.manager.log == [] and pd.manager.reloads.failed == 0
        f.write(text[40:])
    settle(pd)
    assert list(pd.manager.policies) == ["one"]


def test_broken_edit_keeps_old_and_reports(pd):
    p = os.path.join(pd.path, "a.yaml")
    with open(p, "w") as f:
        f.write(POLICY.format(name="one"))
    settle(pd)
    with open(p, "w") as f:
        f.write(POLICY.format(name="one").replace("Sigkill", "Explode"))
    settle(pd)
    assert list(pd.manager.policies) == ["one"]
    rec = pd.files[p]
    assert not rec.ok and rec.names == ["one"] and "Explode" in rec.errors[0]


def test_duplicate_names_and_retry_when_owner_goes(pd):
    a, b = (os.path.join(pd.path, n) for n in ("a.yaml", "b.yaml"))
    for p in (a, b):
        with open(p, "w") as f:
            f.write(POLICY.format(name="same"))
    settle(pd)
    assert pd.manager.policies["same"].file == a
    assert a in pd.files[b].errors[0] and b in pd.files[b].errors[0]
    os.unlink(a)
    settle(pd)
    assert pd.manager.policies["same"].file == b


def test_write_and_remove_for_the_cli(pd):
    with pytest.raises(PolicyRejected, match="not a policy file name"):
        PolicyFiles(pd).write(".hidden.yaml", POLICY.format(name="x"))
    with pytest.raises(PolicyRejected, match="Explode"):
        PolicyFiles(pd).write("x.yaml", POLICY.format(name="x").replace("Sigkill", "Explode"))
    assert os.listdir(pd.path) == []
    assert PolicyFiles(pd).write("x.yaml", POLICY.format(name="x")).ok
    assert os.listdir(pd.path) == ["x.yaml"] and "x" in pd.manager.policies
    with pytest.raises(PolicyRejected, match="already loaded"):
        PolicyFiles(pd).write("y.yaml", POLICY.format(name="x"))
    settle(pd)     # the inotify echo of our own write changes nothing
    assert pd.manager.log == [("apply", "x.yaml")]
    PolicyFiles(pd).remove_policy("x")
    assert os.listdir(pd.path) == [] and pd.manager.policies == {}
    with pytest.raises(KeyError):
        PolicyFiles(pd).remove_policy("x")


@pytest.fixture
def parses(monkeypatch):
    """How many times YAML policy text was parsed (every load goes through parse_documents)."""
    from tetrahost.policy import load
    calls = []
    real = load.parse_documents

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(load, "parse_documents", counting)
    return calls



@pytest.fixture
def real_pd(tmp_path, monkeypatch):
    """PolicyDirectory over the real PolicyManager, minus the kernel: policies load with no hooks."""
    from tetrahost.runtime.manager import PolicyManager
    manager = PolicyManager(features=None, host_ns=None, shared_maps={})
    monkeypatch.setattr(manager, "_attach", lambda hs: None)
    d = PolicyDirectory(str(tmp_path / "policies.d"), debounce=0.05, manager=manager)
    d.start()
    yield d
    d.stop()
    manager.pool.close()


def test_a_written_file_is_parsed_once(real_pd, parses):
    """write() checks the text, then loads that same parse."""
    manager = real_pd.manager
    rec = PolicyFiles(real_pd).write("x.yaml", POLICY.format(name="x"))
    assert rec.ok and list(manager.policies) == ["x"] and len(parses) == 1
    settle(real_pd)         # the inotify echo: same digest, not parsed again
    assert len(parses) == 1 and manager.reloads.ok == 1
    rec = PolicyFiles(real_pd).write("x.yaml", POLICY.format(name="x").replace("/tmp/xmrig", "/tmp/other"))
    assert rec.ok and manager.policies["x"].generation == 2 and len(parses) == 2


def test_a_file_changed_after_the_check_is_loaded_from_disk(real_pd):
    """The checked parse is used only for the content it came from."""
    with open(os.path.join(real_pd.path, "x.yaml"), "w") as f:
        f.write(POLICY.format(name="on-disk"))
    checked = ("not the digest of the file", load_text(POLICY.format(name="checked")))
    rec = real_pd.reconcile("x.yaml", checked=checked)
    assert rec.names == ["on-disk"] and list(real_pd.manager.policies) == ["on-disk"]


def test_rejections_read_the_same_whether_checked_or_loaded(real_pd):
    """write()'s check and a file dropped into the directory report a bad policy identically;
    the check's problems carry file, line and field apart (the control socket sends them so)."""
    bad = POLICY.format(name="x").replace("Sigkill", "Explode")
    with pytest.raises(PolicyRejected) as info:
        PolicyFiles(real_pd).write("x.yaml", bad)
    with open(os.path.join(real_pd.path, "x.yaml"), "w") as f:
        f.write(bad)
    settle(real_pd)
    errors = real_pd.files[os.path.join(real_pd.path, "x.yaml")].errors
    assert errors == [p["text"] for p in info.value.problems] and "Explode" in errors[0]
    (problem,) = info.value.problems
    assert problem["file"] == os.path.join(real_pd.path, "x.yaml")
    assert problem["line"] == bad.splitlines().index("      - action: Explode") + 1
    assert problem["field"] == "spec.kprobes[0].selectors[0].matchActions[0].action"
    assert problem["message"].startswith('unknown action "Explode"')


def test_special_and_oversized_files_are_errors_not_hangs(pd):
    """Each is reported by name; none blocks (a FIFO would block a plain open) or is read in full."""
    d = pd.path
    os.mkfifo(os.path.join(d, "fifo.yaml"))
    os.symlink("/dev/zero", os.path.join(d, "zero.yaml"))
    os.symlink("/proc/self/mem", os.path.join(d, "mem.yaml"))
    os.symlink("/nonexistent/x", os.path.join(d, "dangling.yaml"))
    os.mkdir(os.path.join(d, "dir.yaml"))
    pd.max_file_bytes = 4096
    with open(os.path.join(d, "big.yaml"), "w") as f:
        f.write("#" * 5000)
    with open(os.path.join(d, "good.yaml"), "w") as f:
        f.write(POLICY.format(name="good"))
    settle(pd)
    expect = {"fifo.yaml": "not a regular file: it is a FIFO",
              "zero.yaml": "not a regular file (through a symbolic link): it is a character device",
              "mem.yaml": "cannot read", "dangling.yaml": "symbolic link to a file that does not exist",
              "dir.yaml": "not a regular file: it is a directory", "big.yaml": "too large"}
    for name, why in expect.items():
        rec = pd.files[os.path.join(d, name)]
        assert not rec.ok and why in rec.errors[0] and name in rec.errors[0], (name, rec.errors)
    assert list(pd.manager.policies) == ["good"]


def test_parser_crashes_are_errors_for_the_file(pd):
    """Self-referencing aliases and deep nesting make the parser recurse without end: in the
    parsing worker that is an error for the file, and the next file still loads."""
    d = pd.path
    for name, text in (("alias.yaml", "a: &a [*a]\n"), ("deep.yaml", "[" * 5000 + "]" * 5000),
                       ("ok.yaml", POLICY.format(name="ok"))):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    settle(pd)
    for name in ("alias.yaml", "deep.yaml"):
        rec = pd.files[os.path.join(d, name)]
        assert not rec.ok and name in rec.errors[0]
    assert list(pd.manager.policies) == ["ok"]


def test_a_hard_link_is_noticed_and_a_new_file_waits_for_its_close(pd, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(POLICY.format(name="linked"))
    os.link(outside, os.path.join(pd.path, "linked.yaml"))      # IN_CREATE only: no close_write
    f = open(os.path.join(pd.path, "open.yaml"), "w")           # created, not closed: not read
    f.write(POLICY.format(name="open")[:30])
    f.flush()
    settle(pd)
    assert list(pd.manager.policies) == ["linked"]
    f.write(POLICY.format(name="open")[30:])
    f.close()
    settle(pd)
    assert sorted(pd.manager.policies) == ["linked", "open"]


def test_an_unforeseen_failure_costs_one_file_an_error(pd, monkeypatch):
    """Whatever breaks while one file is handled, the queue goes on to the next."""
    real = pd.manager.begin_apply

    def flaky(path, text, parsed=None):
        if path.endswith("bad.yaml"):
            raise OverflowError("something nobody expected")
        return real(path, text, parsed)

    monkeypatch.setattr(pd.manager, "begin_apply", flaky)
    for name in ("bad.yaml", "good.yaml"):
        with open(os.path.join(pd.path, name), "w") as f:
            f.write(POLICY.format(name=name[:-5]))
    settle(pd)
    rec = pd.files[os.path.join(pd.path, "bad.yaml")]
    assert not rec.ok and "OverflowError" in rec.errors[0] and "bad.yaml" in rec.errors[0]
    assert list(pd.manager.policies) == ["good"]


def test_parse_time_starts_when_the_worker_is_ready(monkeypatch, tmp_path):
    """A worker slow to import the parser (an emulated CPU) is not a timed-out
    file: the parse deadline starts at its greeting."""
    import time as _time

    from tetrahost.policy import isolated

    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(1.5)\n")   # a slow interpreter start
    real_env = isolated._worker_env
    monkeypatch.setattr(isolated, "_worker_env",
                        lambda: {**real_env(), "PYTHONPATH": f"{tmp_path}:{real_env()['PYTHONPATH']}"})
    parser = isolated.ParseInChild(timeout=0.5)
    pending = parser.start("/p/ok.yaml", POLICY.format(name="ok"))
    deadline = _time.monotonic() + 30
    while (result := pending.poll()) is None and _time.monotonic() < deadline:
        _time.sleep(0.01)
    parser.close()
    assert result is not None and result.ok, result and result.errors


def test_tetragon_directory_is_read_too_and_a_name_in_both_is_a_conflict(tmp_path, monkeypatch):
    """policies.d and Tetragon's tetragon.tp.d feed one manager: both load, and a
    policy name defined in both is refused for the second file, naming the first."""
    from tetrahost.runtime.manager import PolicyManager
    manager = PolicyManager(features=None, host_ns=None, shared_maps={})
    monkeypatch.setattr(manager, "_attach", lambda hs: None)
    ours, theirs = tmp_path / "policies.d", tmp_path / "tetragon.tp.d"
    theirs.mkdir()
    (theirs / "from-tetragon.yaml").write_text(POLICY.format(name="from-tetragon"))
    (theirs / "dup.yaml").write_text(POLICY.format(name="same"))
    primary = PolicyDirectory(str(ours), debounce=0.05, manager=manager)
    secondary = PolicyDirectory(str(theirs), debounce=0.05, manager=manager, primary=False)
    primary.start()
    secondary.start()
    try:
        assert "from-tetragon" in manager.policies and "same" in manager.policies
        with open(ours / "dup.yaml", "w") as f:
            f.write(POLICY.format(name="same"))
        settle(primary)
        rec = primary.files[os.path.join(primary.path, "dup.yaml")]
        assert not rec.ok and "same" in rec.errors[0] and str(theirs / "dup.yaml") in " ".join(rec.errors)
        assert manager.policies["same"].file == str(theirs / "dup.yaml")
    finally:
        primary.stop()
        secondary.stop()
        manager.pool.close()


def test_a_missing_tetragon_directory_is_not_created(tmp_path):
    d = PolicyDirectory(str(tmp_path / "tetragon.tp.d"), manager=FakeManager(), primary=False)
    with pytest.raises(OSError):
        d.start()        # run_cmd only starts it when the directory exists
    d.stop()
    assert not (tmp_path / "tetragon.tp.d").exists()
