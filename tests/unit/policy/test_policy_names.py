"""metadata.name follows the rule Tetragon applies to every policy, file or
cluster object: Kubernetes' DNS-1123 subdomain (NameIsDNSSubdomain)."""

import pytest

from tetrahost.policy import load_text

RULE = ("is not a valid policy name: Tetragon and Kubernetes require a DNS-1123 subdomain: lower "
        "case letters, digits, '-' and '.', every '.'-separated part starting and ending with a "
        "letter or digit")


def load(name: str):
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
            f"  name: {name!r}\nspec:\n  tracepoints:\n  - subsystem: syscalls\n"
            "    event: sys_enter_openat\n")
    return load_text(text, file="n.yaml")


@pytest.mark.parametrize("name", [
    "a", "0", "block-cryptominers", "monitor.etc.v2", "a-b.c-d", "9lives",
    "x" * 253, ".".join(["a" * 63] * 4)[:253].rstrip("."),
])
def test_names_tetragon_accepts(name):
    result = load(name)
    assert result.errors == []
    assert [p.name for p in result.policies] == [name]


@pytest.mark.parametrize("name,hint", [
    ("my_policy", ' (try "my-policy")'),        # Tetragon rejects "_" too
    ("Block-Miners", ' (try "block-miners")'),
    ("a..b", ' (try "a.b")'),                   # an empty part
    ("a.-b", ' (try "a.b")'),                   # a part starting with '-'
    ("a-.b", ' (try "a.b")'),                   # a part ending with '-'
    ("-a", ' (try "a")'),
    ("a.", ' (try "a")'),
    ("a b", ' (try "a-b")'),
    ("_", ""),
])
def test_names_tetragon_rejects(name, hint):
    result = load(name)
    assert [e.render() for e in result.errors] == [f'n.yaml:4: metadata.name: "{name}" {RULE}{hint}']
    assert result.policies == []


def test_name_length():
    result = load("x" * 254)
    assert [e.render() for e in result.errors] == [
        "n.yaml:4: metadata.name: a policy name has at most 253 characters, this one has 254"]
