"""TracingPolicy front end: parse, validate and model Tetragon policies.

    from tetrahost.policy import load_file, check_file, render_result
    policies = load_file("block-cryptominers.yaml")   # raises PolicyLoadError
    print(render_result(check_file("policy.yaml")))   # never raises
"""

from .canonical import canonicalize_path
from .check import AttachDescriber, CheckResult, attach_not_probed, check_file, check_files, render_result, render_results
from .errors import Location, PolicyError, PolicyLoadError, PolicyWarning
from .load import LoadResult, load_file, load_path, load_text
from .model import (Action, Arg, Hook, MatchArg, MatchBinaries, MatchCapabilities, MatchNamespace,
                    MatchNamespaceChanges, MatchPIDs, PathValue, Policy, PortRange, Selector)
from .vocab import ArgKind

__all__ = [
    "Action", "Arg", "ArgKind", "AttachDescriber", "CheckResult", "Hook", "LoadResult", "Location",
    "MatchArg", "MatchBinaries", "MatchCapabilities", "MatchNamespace", "MatchNamespaceChanges",
    "MatchPIDs", "PathValue", "Policy", "PolicyError", "PolicyLoadError", "PolicyWarning", "PortRange",
    "Selector", "attach_not_probed", "canonicalize_path", "check_file", "check_files", "load_file",
    "load_path", "load_text", "render_result", "render_results",
]
