"""Workload attribution from cgroup v2 paths, and cgroup id -> path resolution.

On a plain host the cgroup a process lives in says what it belongs to:
systemd puts every service in its own unit cgroup, and container runtimes
name their cgroups after the container.  `workload_from_path` reads that.

Recognised layouts (path as in /proc/<pid>/cgroup's "0::" line):
  systemd units     /system.slice/nginx.service             unit nginx.service
                    /user.slice/user-1000.slice/session-3.scope
                    /user.slice/.../user@1000.service/app.slice/foo.service  unit foo.service
  docker            /system.slice/docker-<64hex>.scope     (systemd cgroup driver)
                    /docker/<id>                            (cgroupfs driver)
  podman / libpod   .../libpod-<id>.scope, .../libpod-<id>, libpod-conmon-<id>.scope (the
                    container's monitor, attributed to the container)
  containerd        /system.slice/containerd.service/<id>, .../cri-containerd-<id>.scope,
                    nerdctl-<id>.scope
  cri-o             crio-<id>.scope, crio-conmon-<id>.scope
  systemd-nspawn    /machine.slice/systemd-nspawn@NAME.service, /machine.slice/machine-NAME.scope
                    (machined also registers libvirt VMs as machine-*.scope; they show as
                    systemd-nspawn too, the cgroup alone cannot tell them apart)
  lxc               /lxc.payload.NAME, /lxc.monitor.NAME, /lxc/NAME

`unit` is the innermost systemd unit on the path up to the container boundary
(cgroups a container creates inside itself say nothing about the host);
`slice` is the innermost slice holding that unit.

Workload namespace (what `--namespace NAME` filters on), the host analogue of
a Kubernetes namespace:
  * a process in a container: the container runtime's name -- "docker",
    "podman", "containerd", "cri-o", "lxc", "systemd-nspawn";
  * any other process: the TOP-LEVEL systemd slice it runs under --
    "system.slice", "user.slice", "machine.slice", or a custom top slice;
  * a process directly in the root cgroup or in /init.scope (pid 1, kernel
    threads): "-.slice", systemd's name for the root slice;
  * cgroup unknown (empty path): "".

cgroup id -> path: the kernel's cgroup v2 id is the inode number of the
cgroup's directory in the unified hierarchy.  CgroupResolver scans that
hierarchy into an inode -> path map, answers from it, and rescans on a miss,
at most once per `min_rescan_interval` seconds so a burst of events from a
cgroup that vanished cannot turn into a rescan storm.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")

ROOT_SLICE = "-.slice"


@dataclass(frozen=True, slots=True)
class Workload:
    unit: str | None = None
    slice: str | None = None
    container_id: str | None = None
    container_runtime: str | None = None
    container_name: str | None = None
    namespace: str = ""


def unescape_unit_name(name: str) -> str:
    """systemd escapes bytes in unit names as \\xNN ("my\\x2dbox" is "my-box")."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def _strip(comp: str, prefix: str, suffix: str = "") -> str | None:
    if comp.startswith(prefix) and comp.endswith(suffix):
        return comp[len(prefix):len(comp) - len(suffix) if suffix else None]
    return None


# (prefix, suffix, runtime) for "<prefix><hex id><suffix>" components; longest prefix first
# so libpod-conmon- wins over libpod-.
_ID_PATTERNS = (
    ("libpod-conmon-", ".scope", "podman"),
    ("libpod-", ".scope", "podman"),
    ("libpod-", "", "podman"),
    ("docker-", ".scope", "docker"),
    ("cri-containerd-", ".scope", "containerd"),
    ("nerdctl-", ".scope", "containerd"),
    ("crio-conmon-", ".scope", "cri-o"),
    ("crio-", ".scope", "cri-o"),
)


def _container_at(comps: list[str], i: int) -> tuple[str, str | None, str | None] | None:
    """(runtime, id, name) if component i starts a container, else None."""
    comp = comps[i]
    nxt = comps[i + 1] if i + 1 < len(comps) else None
    for prefix, suffix, runtime in _ID_PATTERNS:
        ident = _strip(comp, prefix, suffix)
        if ident is not None and _HEX_ID.match(ident):
            return runtime, ident, None
    if comp == "docker" and nxt is not None and _HEX_ID.match(nxt):
        return "docker", nxt, None
    if comp == "containerd.service" and nxt is not None:
        return "containerd", _strip(nxt, "", ".scope") or nxt, None
    name = _strip(comp, "systemd-nspawn@", ".service")
    if name:
        return "systemd-nspawn", None, unescape_unit_name(name)
    name = _strip(comp, "machine-", ".scope")
    if name:
        return "systemd-nspawn", None, unescape_unit_name(name)
    for prefix in ("lxc.payload.", "lxc.monitor."):
        name = _strip(comp, prefix)
        if name:
            return "lxc", None, name
    if comp == "lxc" and nxt:
        return "lxc", None, nxt
    return None


@lru_cache(maxsize=4096)
def workload_from_path(path: str) -> Workload:
    """Attribute a cgroup v2 path to a systemd unit / container (cached: few distinct paths)."""
    if not path:
        return Workload()
    comps = [c for c in path.split("/") if c]
    unit = slice_ = top_slice = None
    for i, comp in enumerate(comps):
        found = _container_at(comps, i)
        if found is not None:
            runtime, ident, name = found
            if comp.endswith((".scope", ".service")):
                unit = comp
            return Workload(unit=unit, slice=slice_, container_id=ident,
                            container_runtime=runtime, container_name=name,
                            namespace=runtime)
        if comp.endswith(".slice"):
            slice_ = comp
            top_slice = top_slice or comp
        elif comp.endswith((".service", ".scope")):
            unit = comp
    return Workload(unit=unit, slice=slice_, namespace=top_slice or ROOT_SLICE)


def default_cgroup_root() -> str:
    """/sys/fs/cgroup on a unified host; the v2 mount of a hybrid (systemd) host otherwise."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup"
    if os.path.isdir("/sys/fs/cgroup/unified"):
        return "/sys/fs/cgroup/unified"
    return "/sys/fs/cgroup"


def scan_cgroup_tree(root: str) -> dict[int, str]:
    """inode -> cgroup path ("/" for the root) for every directory below root."""
    mapping: dict[int, str] = {}
    try:
        mapping[os.stat(root).st_ino] = "/"
    except OSError:
        return mapping
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                    except OSError:
                        continue
                    child_rel = f"{rel}/{entry.name}"
                    # d_ino from readdir is the kernfs node id: no stat() per cgroup.
                    mapping[entry.inode()] = child_rel
                    stack.append((entry.path, child_rel))
        except OSError:
            continue   # removed while we walked: its children went with it
    return mapping


class CgroupResolver:
    """cgroup v2 id -> path, cached, with bounded rescans on a miss."""

    def __init__(self, root: str | None = None, min_rescan_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.root = root if root is not None else default_cgroup_root()
        self.min_rescan_interval = min_rescan_interval
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._last_scan: float | None = None
        self.scans = 0
        self.misses = 0

    def rescan(self) -> None:
        self._paths = scan_cgroup_tree(self.root)
        self._last_scan = self._clock()
        self.scans += 1

    def path_for(self, cgroup_id: int) -> str | None:
        path = self._paths.get(cgroup_id)
        if path is not None:
            return path
        now = self._clock()
        if self._last_scan is None or now - self._last_scan >= self.min_rescan_interval:
            self.rescan()
            path = self._paths.get(cgroup_id)
            if path is not None:
                return path
        self.misses += 1
        return None

    def workload_for(self, cgroup_id: int) -> tuple[str, Workload]:
        path = self.path_for(cgroup_id) or ""
        return path, workload_from_path(path)
