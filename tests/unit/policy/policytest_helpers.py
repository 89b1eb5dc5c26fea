"""Helpers shared by the policy tests (imported by module name: tests are not a package)."""

import textwrap
from pathlib import Path

from tetrahost.policy import load_text

REPO = Path(__file__).resolve().parents[3]
CONFORMANCE = REPO.parent / "shared" / "conformance"

HEADER = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: test
spec:
"""  # spec's content starts on line 6


def policy_text(spec_body: str) -> str:
    """A policy whose spec body (indented by the caller as under `spec:`) starts at line 6."""
    return HEADER + textwrap.indent(textwrap.dedent(spec_body).strip("\n"), "  ") + "\n"


def errors_of(spec_body: str, root: str = "/") -> list[str]:
    result = load_text(policy_text(spec_body), file="p.yaml", root=root)
    return [e.render() for e in result.errors]
