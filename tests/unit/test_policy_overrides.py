"""The operator's set-mode / disable decisions: kept in a file, bad files reported, never fatal."""
from __future__ import annotations

import json
import logging

import pytest

from tetrahost.runtime.overrides import PolicyOverrides


def test_decisions_are_written_and_read_back(tmp_path):
    path = tmp_path / ".state.json"
    o = PolicyOverrides(str(path))
    assert o.mode("a") is None and o.enabled("a")
    o.set("a", mode="monitor")
    o.set("a", enabled=False)
    o.set("b", enabled=True)
    assert json.loads(path.read_text()) == {"a": {"mode": "monitor", "enabled": False}, "b": {"enabled": True}}
    again = PolicyOverrides(str(path))
    assert again.mode("a") == "monitor" and not again.enabled("a") and again.enabled("b")
    before = again.entry("a")
    again.set("a", mode="enforce", enabled=True)
    again.put("a", before)                  # a decision taken back (its reload failed)
    assert PolicyOverrides(str(path)).describe()["a"] == {"mode": "monitor", "enabled": False}
    again.put("b", None)
    assert "b" not in json.loads(path.read_text())
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_bad_mode_is_refused_and_nothing_written(tmp_path):
    o = PolicyOverrides(str(tmp_path / "s.json"))
    with pytest.raises(ValueError, match="enforce, monitor"):
        o.set("a", mode="audit")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("content, why", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"[" * 100000, "not JSON"),                        # deep nesting: reported, not a crash
    (b" " * (2 << 20), "larger than 1 MiB"),
])
def test_a_bad_file_is_reported_by_name_and_policies_load_as_written(tmp_path, caplog, content, why):
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        o = PolicyOverrides(str(path))
    assert o.describe() == {}
    assert str(path) in caplog.text and why in caplog.text


def test_a_bad_entry_is_skipped_the_others_kept(tmp_path, caplog):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"a": {"mode": "audit"}, "b": {"enabled": "no"}, "c": {"mode": "monitor"}}))
    with caplog.at_level(logging.ERROR):
        o = PolicyOverrides(str(path))
    assert o.describe() == {"c": {"mode": "monitor"}}
    assert f"{path}: a: ignored" in caplog.text and f"{path}: b: ignored" in caplog.text


class FakeManager:
    """apply_file reloads with the overrides, as PolicyManager does; `fail` makes it refuse."""

    def __init__(self, overrides, enforcing=True):
        from types import SimpleNamespace
        hook = SimpleNamespace(kind="kprobe", has_enforcement=enforcing)
        self.overrides, self.fail, self.applied = overrides, False, []
        self.policies = {"p": SimpleNamespace(file="/d/p.yaml", policy=SimpleNamespace(name="p", hooks=(hook,)))}

    def apply_file(self, path):
        from tetrahost.runtime.state import PolicyLoadFailed
        if self.fail:
            raise PolicyLoadFailed(path, ["p.yaml:3: spec: no longer valid"])
        self.applied.append((path, self.overrides.mode("p"), self.overrides.enabled("p")))


def test_a_decision_whose_reload_fails_is_taken_back(tmp_path):
    from tetrahost.runtime.policy_modes import PolicyModes
    from tetrahost.runtime.state import PolicyLoadFailed
    manager = FakeManager(PolicyOverrides(str(tmp_path / "s.json")))
    modes = PolicyModes(manager)
    modes.set_mode("p", "monitor")
    assert manager.applied == [("/d/p.yaml", "monitor", True)]
    manager.fail = True
    with pytest.raises(PolicyLoadFailed):
        modes.set_enabled("p", False)
    assert PolicyOverrides(str(tmp_path / "s.json")).describe() == {"p": {"mode": "monitor"}}
    with pytest.raises(KeyError, match='no policy named "q"'):
        modes.set_enabled("q", False)


def test_enforce_is_refused_for_a_policy_with_nothing_to_enforce(tmp_path):
    from tetrahost.runtime.policy_modes import PolicyModes
    manager = FakeManager(PolicyOverrides(), enforcing=False)
    with pytest.raises(ValueError, match="monitor only"):
        PolicyModes(manager).set_mode("p", "enforce")
    assert manager.applied == [] and manager.overrides.describe() == {}
