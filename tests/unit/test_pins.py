"""The pinned state's manifest checks and the stop-or-restart decision of `tetrahost cleanup`."""
import json

import pytest

from tetrahost.cli.cleanup_cmd import should_clean, unit_job
from tetrahost.sensors.pins import MAGIC, PIN_LAYOUT, ManifestError, parse_manifest


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
