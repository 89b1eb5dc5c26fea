"""What a valid policy file must still pass before any of its hooks is
attached: the operator's set-mode decisions applied, names no other file
owns, and the hook limits.  A file that fails loads nothing and touches
nothing loaded (PolicyManager._apply_steps raises before attaching)."""
from __future__ import annotations

from dataclasses import replace

from tetrahost.policy.load import LoadResult
from tetrahost.runtime.overrides import PolicyOverrides
from tetrahost.runtime.state import Limits, PolicyLoadFailed, PolicyState


def as_overridden(result: LoadResult, overrides: PolicyOverrides) -> LoadResult:
    """The policies as the operator set them (set-mode wins over the file's mode)."""
    policies = []
    for p in result.policies:
        mode = overrides.mode(p.name)
        policies.append(p if mode in (None, p.mode) else replace(p, mode=mode))
    return replace(result, policies=policies)


def check_names(loaded: dict[str, PolicyState], path: str, result: LoadResult, replacing: bool) -> None:
    """Each policy name belongs to one file: PolicyLoadFailed (name_conflict)
    when another file (or, not replacing, any loaded one) has it."""
    problems = []
    for p in result.policies:
        owner = loaded.get(p.name)
        if owner is not None and (not replacing or owner.file != path):
            problems.append(f'policy "{p.name}" is defined in both {owner.file} and {path}; '
                            f"{path} is not loaded")
    if problems:
        raise PolicyLoadFailed(path, problems, name_conflict=True)


def check_limits(limits: Limits, loaded: dict[str, PolicyState], reserved: dict[str, int], path: str,
                 result: LoadResult, replacing: bool) -> None:
    """Hook counts against limits.* (each hook costs kernel memory, fds and a
    verifier run); reserved: hooks of other files' loads in progress."""
    problems = [f'policy "{p.name}" has {len(p.hooks)} hooks: more than limits.max_hooks_per_policy '
                f"({limits.max_hooks_per_policy})"
                for p in result.policies if len(p.hooks) > limits.max_hooks_per_policy]
    adding = sum(len(p.hooks) for p in result.policies)
    others = (sum(len(s.hooks) for s in loaded.values() if not (replacing and s.file == path))
              + sum(n for f, n in reserved.items() if f != path))
    if others + adding > limits.max_hooks_total:
        problems.append(f"its {adding} hooks would make {others + adding} in all: more than "
                        f"limits.max_hooks_total ({limits.max_hooks_total}; {others} loaded)")
    if problems:
        raise PolicyLoadFailed(path, problems)
