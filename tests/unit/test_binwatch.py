"""tetrahost/runtime/binwatch.py without a kernel: which directories are
watched, which events count, and what a changed target leads to (a re-attach,
an error state, a fresh attach), with fake hook states and sensors."""
from __future__ import annotations

import os
import types

import pytest

from tetrahost.bpf import BpfError
from tetrahost.runtime.binwatch import BinaryWatch, watched_names
from tetrahost.sensors.generic import file_identity


class FakeSensor:
    def __init__(self, path, fail=None):
        self.path, self.fail = path, fail
        self.target_id = file_identity(path)
        self.links = [FakeLink("old")]
        self.stopped = False

    def retarget(self):
        if self.fail:
            raise BpfError(2, self.fail)
        self.target_id = file_identity(self.path)
        old, self.links = self.links, [FakeLink("new")]
        return old

    def stop(self):
        self.stopped = True


class FakeLink:
    def __init__(self, name):
        self.name, self.destroyed = name, False

    def destroy(self):
        self.destroyed = True


class FakeManager:
    def __init__(self, hooks):
        self.policies = {"p": types.SimpleNamespace(hooks=hooks)}
        self.pins = None
        self.attached = []

    def _attach(self, hs):
        self.attached.append(hs)
        hs.sensor = FakeSensor(hs.hook.path)

    def _release_proc_state(self, hs):
        pass


def hook_state(path, kind="uprobe", sensor=True, fail=None):
    hook = types.SimpleNamespace(kind=kind, path=str(path), symbol="th_fn", provider="", usdt_name="",
                                 offset=0, describe=lambda: f"{kind} {path}:th_fn")
    hs = types.SimpleNamespace(hook=hook, policy=types.SimpleNamespace(name="p", file="p.yaml"),
                               hook_id=1, retired_at=None, retry_at=None, pinned=False, error="",
                               reattached=0, binary_changed_at=None, sensor=None)
    if sensor:
        hs.sensor = FakeSensor(str(path), fail)
    return hs


def replace_file(path, content=b"new"):
    tmp = f"{path}.dpkg-new"
    with open(tmp, "wb") as f:
        f.write(content)
    os.rename(tmp, path)


@pytest.fixture
def binary(tmp_path):
    p = tmp_path / "bin" / "app"
    p.parent.mkdir()
    p.write_bytes(b"old")
    return p


def test_watched_names_include_the_symlink_target(tmp_path, binary):
    link = tmp_path / "app-link"
    link.symlink_to(binary)
    assert watched_names(str(link)) == {(str(tmp_path), "app-link"), (str(binary.parent), "app")}


def test_a_renamed_over_binary_is_retargeted_old_links_destroyed(binary):
    hs = hook_state(binary)
    old_links = hs.sensor.links
    watch = BinaryWatch(FakeManager([hs]))
    watch.start()
    try:
        replace_file(binary)
        watch.on_inotify()
        assert watch._dirty == {str(binary)}
        watch.check(watch._dirty)
        assert hs.reattached == 1 and all(link.destroyed for link in old_links)
        assert hs.sensor.target_id == file_identity(str(binary))
    finally:
        watch.stop()


def test_events_of_other_names_and_unchanged_files_do_nothing(binary):
    hs = hook_state(binary)
    watch = BinaryWatch(FakeManager([hs]))
    watch.start()
    try:
        (binary.parent / "other").write_bytes(b"x")
        watch.on_inotify()
        assert watch._dirty == set()
        watch.check({str(binary)})
        assert hs.reattached == 0
    finally:
        watch.stop()


def test_a_new_file_without_the_symbol_puts_the_hook_in_error(binary):
    hs = hook_state(binary, fail="uprobe/app:th_fn: No such file or directory")
    watch = BinaryWatch(FakeManager([hs]))
    watch.start()
    try:
        sensor = hs.sensor
        replace_file(binary)
        watch.check({str(binary)})
        assert hs.sensor is None and sensor.stopped
        assert f"{binary} (th_fn) was replaced and the new file cannot take the hook" in hs.error
        assert hs.binary_changed_at is not None and hs.reattached == 0
    finally:
        watch.stop()


def test_a_hook_in_error_is_attached_afresh_only_when_its_file_changes(binary):
    hs = hook_state(binary, sensor=False)
    manager = FakeManager([hs])
    watch = BinaryWatch(manager)
    watch.start()           # first look: remembered, not attached
    try:
        watch.check({str(binary)})
        assert manager.attached == []
        replace_file(binary)
        watch.check({str(binary)})
        assert manager.attached == [hs] and hs.reattached == 1
    finally:
        watch.stop()


def test_directories_follow_the_loaded_hooks(tmp_path, binary):
    hs = hook_state(binary)
    manager = FakeManager([hs])
    watch = BinaryWatch(manager)
    watch.start()
    try:
        assert set(watch._wds) == {str(binary.parent)}
        hs.retired_at = 1.0          # its policy was unloaded
        watch.sync()
        assert watch._wds == {}
    finally:
        watch.stop()
