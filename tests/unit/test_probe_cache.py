"""The probe's answer kept for the boot (tetrahost/sensors/probe_cache.py):
used only under the same key, from a private file, never from a foreign one."""
import dataclasses
import json
import os

import pytest

from tetrahost.sensors import probe_cache
from tetrahost.sensors.probe import Capability, Evidence


def evidence(**changes) -> Evidence:
    ev = Evidence(release="6.1.0", btf="/sys/kernel/btf/vmlinux", lockdown="none", lsms=["capability", "bpf"],
                  kprobe_events=True, kprobe_pmu=True, ftrace_functions="readable", config_source=None,
                  config={}, libbpf="v1.4", mounted=[])
    return dataclasses.replace(ev, **changes)


CAPS = [Capability("kprobe", True, "attached", "kprobe/x"),
        Capability("lsm", False, "bpf is not an active LSM", "lsm/x", stage="load", errno="EINVAL")]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir(mode=0o750)
    monkeypatch.setenv(probe_cache.ENV, str(d / "probe.json"))
    obj = tmp_path / "probe.bpf.o"
    obj.write_bytes(b"\x7fELF one build")
    return d / "probe.json", obj


def test_the_answer_is_kept_under_its_key(cache):
    path, obj = cache
    key = probe_cache.cache_key(evidence(), str(obj))
    probe_cache.store(key, CAPS)
    assert probe_cache.load(key, Capability) == CAPS
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_what_the_evidence_shows_and_the_build_are_in_the_key(cache):
    """Lockdown raised, another LSM list, another probe object: a new probe.
    What probing mounted is not part of it (the first probe mounts, the next not)."""
    _, obj = cache
    key = probe_cache.cache_key(evidence(), str(obj))
    assert probe_cache.cache_key(evidence(mounted=["/sys/kernel/tracing"]), str(obj)) == key
    assert probe_cache.cache_key(evidence(lockdown="integrity"), str(obj)) != key
    assert probe_cache.cache_key(evidence(lsms=["capability"]), str(obj)) != key
    probe_cache.store(key, CAPS)
    obj.write_bytes(b"\x7fELF another build")
    other = probe_cache.cache_key(evidence(), str(obj))
    assert other != key and probe_cache.load(other, Capability) is None


def test_a_file_others_may_write_is_not_believed(cache):
    path, obj = cache
    key = probe_cache.cache_key(evidence(), str(obj))
    probe_cache.store(key, CAPS)
    os.chmod(path, 0o666)
    assert probe_cache.load(key, Capability) is None
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o777)
    assert probe_cache.load(key, Capability) is None


@pytest.mark.parametrize("text", ["", "[]", '{"key": 1}', "{" * 100, '{"key": "K", "capabilities": [{"nom": 1}]}',
                                  '{"key": "K", "capabilities": [{"name": "x"}]}', '{"key": "K"}'])
def test_a_malformed_file_means_a_new_probe(cache, text):
    path, _ = cache
    path.write_text(text.replace('"K"', json.dumps("K")))
    os.chmod(path, 0o600)
    assert probe_cache.load("K", Capability) is None


def test_a_symlink_is_not_followed(cache, tmp_path):
    path, obj = cache
    key = probe_cache.cache_key(evidence(), str(obj))
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"key": key, "capabilities": [dataclasses.asdict(c) for c in CAPS]}))
    os.chmod(target, 0o600)
    path.symlink_to(target)
    assert probe_cache.load(key, Capability) is None


def test_off_keeps_nothing(cache, monkeypatch):
    path, obj = cache
    monkeypatch.setenv(probe_cache.ENV, "off")
    key = probe_cache.cache_key(evidence(), str(obj))
    probe_cache.store(key, CAPS)
    assert not path.exists() and probe_cache.load(key, Capability) is None
