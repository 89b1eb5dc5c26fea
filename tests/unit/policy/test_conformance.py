"""Every Tetragon example policy is either accepted or rejected with precise errors."""

import importlib.util

import pytest

from policytest_helpers import REPO
from tetrahost.policy import check_file, load_file, render_result

# Error codes that say precisely what is wrong (as opposed to a catch-all).
PRECISE_CODES = {
    "not-supported", "unsupported-arg-type", "unsupported-action", "unsupported-operator",
    "kubernetes-only", "unknown-field", "unknown-value", "unknown-operator", "unknown-action",
    "unknown-arg-type", "undeclared-arg", "operator-type", "invalid-value", "invalid", "limit",
    "missing", "type", "duplicate", "duplicate-field", "invalid-name", "conflict", "api-version",
    "kind", "yaml-syntax", "no-hooks",
}


def _examples(conformance_dir):
    corpus = conformance_dir / "tetragon-examples"
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert len(files) == 71
    return corpus, files


def test_every_example_is_accepted_or_precisely_rejected(conformance_dir):
    corpus, files = _examples(conformance_dir)
    accepted = 0
    for path in files:
        result = check_file(path)  # must not raise, whatever the file holds
        render_result(result)  # nor must rendering
        if result.ok:
            accepted += 1
            assert result.policies, path
            assert load_file(path) == result.policies
            continue
        for error in result.errors:
            assert error.code in PRECISE_CODES, error
            assert error.line > 0 and error.path, error
            assert error.render().startswith(f"{path}:{error.line}: {error.path}: ")
    assert accepted >= 42


def test_uprobe_examples_accepted_and_k8s_examples_rejected_for_the_right_reason(conformance_dir):
    corpus, _ = _examples(conformance_dir)
    (policy,) = check_file(corpus / "uprobe.yaml").policies
    assert [(h.kind, h.path, h.symbol) for h in policy.hooks] == [
        ("uprobe", "/bin/bash", "readline"), ("uprobe", "/bin/bash", "main")]
    (policy,) = check_file(corpus / "usdt.yaml").policies
    assert [(h.kind, h.provider, h.usdt_name, [a.type for a in h.args]) for h in policy.hooks] == [
        ("usdt", "test", "usdt3", ["int32", "int64"])]
    (policy,) = check_file(corpus / "usdt-set.yaml").policies
    (action,) = policy.hooks[0].selectors[0].match_actions
    assert (action.action, action.arg_index, action.arg_value) == ("Set", 0, 32)
    (error,) = check_file(corpus / "modules-nohost.yaml").errors
    assert (error.code, error.detail, error.line) == ("kubernetes-only", "podSelector", 11)


def test_conformance_md_is_current(conformance_dir):
    spec = importlib.util.spec_from_file_location("conformance_tally", REPO / "scripts" / "conformance_tally.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.tally(conformance_dir / "tetragon-examples")
    current = (REPO / "tetrahost" / "policy" / "CONFORMANCE.md").read_text()
    if current != expected:
        pytest.fail("tetrahost/policy/CONFORMANCE.md is stale: run scripts/conformance_tally.py")
