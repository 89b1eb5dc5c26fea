"""Policies exported from a Kubernetes cluster (`kubectl get tracingpolicy -o yaml`):
the fields the API server sets are ignored with one warning per file."""

from pathlib import Path

from tetrahost.policy import load_text
from tetrahost.policy.load import load_path

EXPORTED = Path(__file__).resolve().parents[2] / "policies" / "exported-kubectl.yaml"

SPEC = """\
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
"""


def test_exported_policy_is_accepted_with_one_warning():
    result = load_path(EXPORTED, display_name="exported.yaml")
    assert result.errors == []
    assert [p.name for p in result.policies] == ["monitor-etc-writes"]
    assert [w.render() for w in result.warnings] == [
        "exported.yaml:10: warning: ignored the fields a Kubernetes API server sets (an exported "
        "object): metadata.creationTimestamp, metadata.generation, metadata.managedFields, "
        "metadata.resourceVersion, metadata.uid"]
    # the spec is what the cluster had: the Prefix matcher survives the export
    selector = result.policies[0].hooks[0].selectors[0]
    assert [m.operator for m in selector.match_args] == ["Prefix", "Equal"]


def test_status_and_every_document_share_one_warning():
    doc = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\n"
           "  uid: {uid}\n" + SPEC + "status:\n  conditions: []\n")
    text = doc.format(name="one", uid="a1") + "---\n" + doc.format(name="two", uid="b2")
    result = load_text(text, file="two.yaml")
    assert result.errors == []
    assert [p.name for p in result.policies] == ["one", "two"]
    assert [w.render() for w in result.warnings] == [
        "two.yaml:5: warning: ignored the fields a Kubernetes API server sets (an exported "
        "object): metadata.uid, status"]


def test_hand_written_policy_has_no_such_warning():
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: mine\n"
            "  labels:\n    team: sec\n  annotations:\n    note: by hand\n" + SPEC)
    result = load_text(text, file="mine.yaml")
    assert result.errors == [] and result.warnings == []


def test_other_metadata_is_still_rejected_with_its_place():
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: x\n"
            "  namespace: default\n  uid: 1\n  labelz: {}\n" + SPEC)
    result = load_text(text, file="bad.yaml")
    assert [e.render() for e in result.errors] == [
        "bad.yaml:5: metadata.namespace: namespace is a Kubernetes-only field, tetrahost runs on "
        "plain hosts (TracingPolicy is cluster-scoped)",
        'bad.yaml:7: metadata.labelz: unknown field "labelz" (expected one of: name, annotations, '
        "labels, uid, resourceVersion, generation, creationTimestamp, deletionTimestamp, "
        "deletionGracePeriodSeconds, managedFields, selfLink, ownerReferences, finalizers, "
        'generateName); did you mean "labels"?']
    assert result.policies == []
