"""Malformed input gives errors, never an exception: mutate every node of real policies."""

import yaml

from tetrahost.policy import load_text

REPLACEMENTS = (None, 7, True, "x", [], {}, [{"a": 1}], "-1", "/bin/../x")
SAMPLES = ("seed-policies/block-cryptominers.yaml", "seed-policies/monitor-sensitive-files.yaml",
           "tetragon-examples/openat_write.yaml", "tetragon-examples/tcp-accept.yaml",
           "tetragon-examples/sys_clock_settime.yaml", "tetragon-examples/fd_install_caps.yaml",
           "tetragon-examples/cves/cve-2024-3094-xz-ssh.yaml", "tetragon-examples/rawtp.yaml")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _replaced(doc, path, value):
    if not path:
        return value
    import copy
    out = copy.deepcopy(doc)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def test_mutations_never_raise(conformance_dir):
    checked = 0
    for sample in SAMPLES:
        doc = yaml.safe_load((conformance_dir / sample).read_text())
        for path in list(_paths(doc)):
            for value in REPLACEMENTS:
                text = yaml.safe_dump(_replaced(doc, path, value))
                result = load_text(text, "m.yaml")
                for error in result.errors:
                    assert error.line >= 1, (sample, path, value, error)
                checked += 1
    assert checked > 1000


def test_garbage_documents():
    for text in ("", "---\n", "- 1\n- 2\n", "42\n", "apiVersion: [\n", "\t\x00", "a: b\n---\n- c\n",
                 "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\nspec: null\n",
                 "? [a]\n: b\n", "&a x: *a\n"):
        result = load_text(text, "g.yaml")
        assert result.errors, text
