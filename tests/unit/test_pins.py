"""The pinned state's manifest checks and the stop-or-restart decision of `tetrahost cleanup`."""
import json

import pytest

from tetrahost.cli.cleanup_cmd import should_clean, unit_job
from tetrahost.sensors.pins import MAGIC, PIN_LAYOUT, ManifestError, PinStore, parse_manifest


def _doc(**over):
    doc = {"magic": MAGIC, "layout": PIN_LAYOUT, "build": "b", "generation": 3, "ringbuf_bytes": 4096,
           "files": {"/p.yaml": {"digest": "d", "policies": [
               {"name": "x", "hooks": [{"id": 7, "links": 1, "config": "c", "dispatch": None}]}]}}}
    doc.update(over)
    return json.dumps(doc).encode()


def test_a_valid_manifest_parses():
    assert parse_manifest(_doc())["files"]["/p.yaml"]["policies"][0]["hooks"][0]["id"] == 7


@pytest.mark.parametrize("raw, message", [
    (b"\xff\xfe", "not JSON"),
    (b"{", "not JSON"),
    (b"[]", "magic"),
    (_doc(magic="tetragon"), "magic"),
    (_doc(layout=PIN_LAYOUT + 1), "layout"),
    (_doc(generation="3"), "generation: expected int"),
    (_doc(hook_ids_used="9"), "hook_ids_used: expected a non-negative int"),
    (_doc(hook_ids_used=-1), "hook_ids_used: expected a non-negative int"),
    (_doc(losses_reported={"exec": "2"}), "losses_reported: expected record kind"),
    (_doc(losses_reported=[1]), "losses_reported: expected record kind"),
    (_doc(files={"/p.yaml": {"digest": "d"}}), "files./p.yaml: expected digest and policies"),
    (_doc(files={"/p.yaml": {"digest": "d", "policies": [{"name": "x", "hooks": [{"id": -1, "links": 1,
                                                                                   "config": "c"}]}]}}),
     "files./p.yaml.policies[0].hooks[0]"),
    (_doc(files={"/p.yaml": {"digest": "d", "policies": [{"name": "x", "hooks": [
        {"id": 1, "links": 0, "config": "c", "dispatch": {"slot": 1, "enter": ["a"]}}]}]}}),
     "hooks[0]"),
])
def test_a_corrupted_or_foreign_manifest_is_refused_with_the_field(raw, message):
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(raw)


def test_a_new_hook_id_is_above_every_id_an_earlier_agent_used(tmp_path):
    """Records name their hook by id and can be read after the hook is gone
    (a replaced generation's ring buffer): ids must not be reused."""
    store = PinStore.__new__(PinStore)          # (no BPF objects needed for this)
    store.root = str(tmp_path)
    store.previous = parse_manifest(_doc(hook_ids_used=9))    # hook 7 runs; 8, 9 were unloaded
    assert store.highest_hook_id() == 9
    (tmp_path / "g2" / "hooks" / "12").mkdir(parents=True)    # pinned by a load a crash cut short
    assert store.highest_hook_id() == 12
    (tmp_path / "g2" / "hooks" / "12").rmdir()
    store.previous = parse_manifest(_doc())     # an earlier build's manifest: no high-water mark
    assert store.highest_hook_id() == 7
    store.previous = None                       # nothing trusted, nothing pinned
    assert store.highest_hook_id() == 0


LIST_JOBS = "1234 tetrahost.service {} running\n1235 other.service start waiting\n"


@pytest.mark.parametrize("job, keep_on_stop, clean", [
    ("stop", False, True),          # systemctl stop, apt remove, shutdown
    ("restart", False, False),      # systemctl restart, package upgrade
    (None, False, False),           # a crash: Restart= brings it back
    ("stop", True, False),          # the operator asked to keep enforcing
])
def test_only_a_stop_job_removes_the_pins(job, keep_on_stop, clean):
    listing = LIST_JOBS.format(job) if job else "1235 other.service stop waiting\n"
    seen = unit_job("tetrahost.service", listing)
    assert seen == job
    assert should_clean("tetrahost.service", keep_on_stop, seen)[0] is clean
