"""Canonicalize policy path values the way the kernel will report paths.

The kernel reports a file's real path (symlinks resolved), so a policy value has
to be rewritten to that form or it can never match: on a merged-/usr host `/bin`
is a link to `usr/bin`, and an exec of `/bin/su` is seen as `/usr/bin/su`. A
value whose file does not exist yet (`/tmp/xmrig`) is resolved through its
longest existing directory and the rest is kept as written.

`root` lets tests resolve against a fixture tree: the result is expressed as an
absolute path inside that tree, and absolute symlink targets are taken relative
to it (as they would be after chroot).
"""

from __future__ import annotations

import os

from .model import PathValue

# Linux gives up after 40 links (MAXSYMLINKS); so do we, keeping the rest literal.
_MAX_SYMLINKS = 40


def canonicalize_path(value: str, root: str = "/") -> str:
    """Return the real path of `value` on the host rooted at `root`.

    `value` must be absolute. A trailing "/" is kept (it matters for Prefix).
    Components that do not exist are kept literally (with "." and ".." folded).
    """
    if not value.startswith("/"):
        raise ValueError(f"not an absolute path: {value!r}")
    trailing_slash = value.endswith("/") and value != "/"
    pending = [p for p in value.split("/") if p]
    resolved: list[str] = []  # real components inside root, known to exist
    links_followed = 0
    missing = False  # once a component is missing, the rest is literal
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if missing:
            resolved.append(part)
            continue
        host_path = os.path.join(root, *resolved, part)
        if os.path.islink(host_path) and links_followed < _MAX_SYMLINKS:
            links_followed += 1
            target = os.readlink(host_path)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        if not os.path.lexists(host_path):
            missing = True
        resolved.append(part)
    out = "/" + "/".join(resolved)
    if trailing_slash and out != "/":
        out += "/"
    return out


def canonical_path_value(ctx, text: str, line: int, path: str) -> PathValue:
    if "\0" in text:
        ctx.error(line, path, "a path cannot hold a NUL byte (\\0)", "invalid-value", "NUL in path")
        return PathValue(text, text)
    cache = ctx.canonical_paths      # a value repeated (by an alias) is resolved once
    if text in cache:
        return cache[text]
    try:
        cache[text] = PathValue(text, canonicalize_path(text, ctx.root))
        return cache[text]
    except OSError as exc:  # unreadable directory: keep the value, say why
        ctx.warn(line, path, f"could not canonicalize {text}: {exc.strerror}; matched as written")
        return PathValue(text, text)
