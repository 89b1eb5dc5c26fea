import os

import pytest

from tetrahost.events.cgroups import (
    CgroupResolver, Workload, scan_cgroup_tree, unescape_unit_name, workload_from_path,
)

ID = "3f2a" * 16          # 64 hex digits
ID2 = "0123456789ab" * 5 + "cdef"


@pytest.mark.parametrize("path, expected", [
    ("/system.slice/nginx.service",
     Workload(unit="nginx.service", slice="system.slice", namespace="system.slice")),
    ("/user.slice/user-1000.slice/session-3.scope",
     Workload(unit="session-3.scope", slice="user-1000.slice", namespace="user.slice")),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
     Workload(unit="foo.service", slice="app.slice", namespace="user.slice")),
    ("/init.scope", Workload(unit="init.scope", namespace="-.slice")),
    ("/", Workload(namespace="-.slice")),
    ("", Workload()),
    (f"/system.slice/docker-{ID}.scope",
     Workload(unit=f"docker-{ID}.scope", slice="system.slice", container_id=ID,
              container_runtime="docker", namespace="docker")),
    (f"/system.slice/docker-{ID}.scope/init.scope",   # cgroups inside the container
     Workload(unit=f"docker-{ID}.scope", slice="system.slice", container_id=ID,
              container_runtime="docker", namespace="docker")),
    (f"/docker/{ID}",
     Workload(container_id=ID, container_runtime="docker", namespace="docker")),
    (f"/machine.slice/libpod-{ID}.scope/container",
     Workload(unit=f"libpod-{ID}.scope", slice="machine.slice", container_id=ID,
              container_runtime="podman", namespace="podman")),
    (f"/machine.slice/libpod-conmon-{ID}.scope",
     Workload(unit=f"libpod-conmon-{ID}.scope", slice="machine.slice", container_id=ID,
              container_runtime="podman", namespace="podman")),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
     Workload(unit=f"libpod-{ID}.scope", slice="user.slice", container_id=ID,
              container_runtime="podman", namespace="podman")),
    (f"/libpod_parent/libpod-{ID}",
     Workload(container_id=ID, container_runtime="podman", namespace="podman")),
    (f"/system.slice/containerd.service/{ID}",
     Workload(unit="containerd.service", slice="system.slice", container_id=ID,
              container_runtime="containerd", namespace="containerd")),
    (f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID2}.scope",
     Workload(unit=f"cri-containerd-{ID2}.scope", slice="kubepods-pod1.slice", container_id=ID2,
              container_runtime="containerd", namespace="containerd")),
    ("/machine.slice/systemd-nspawn@web\\x2d1.service/payload/system.slice/nginx.service",
     Workload(unit="systemd-nspawn@web\\x2d1.service", slice="machine.slice",
              container_runtime="systemd-nspawn", container_name="web-1",
              namespace="systemd-nspawn")),
    ("/machine.slice/machine-db.scope",
     Workload(unit="machine-db.scope", slice="machine.slice", container_runtime="systemd-nspawn",
              container_name="db", namespace="systemd-nspawn")),
    ("/lxc.payload.u1/system.slice/cron.service",
     Workload(container_runtime="lxc", container_name="u1", namespace="lxc")),
    ("/lxc.monitor.u1", Workload(container_runtime="lxc", container_name="u1", namespace="lxc")),
    ("/system.slice/docker.service",      # the daemon itself is no container
     Workload(unit="docker.service", slice="system.slice", namespace="system.slice")),
    ("/system.slice/docker-notanid.scope",
     Workload(unit="docker-notanid.scope", slice="system.slice", namespace="system.slice")),
])
def test_workload_from_path(path, expected):
    assert workload_from_path(path) == expected


def test_unescape_unit_name():
    assert unescape_unit_name("my\\x2dbox") == "my-box"
    assert unescape_unit_name("plain") == "plain"


def _make_tree(root):
    for rel in ("system.slice/nginx.service", "system.slice/sshd.service",
                "user.slice/user-1000.slice/session-3.scope"):
        os.makedirs(root / rel)
    (root / "cgroup.procs").write_text("")          # files are not cgroups


def test_scan_cgroup_tree_maps_inodes_to_paths(tmpfs_path):
    root = tmpfs_path / "cg"
    _make_tree(root)
    mapping = scan_cgroup_tree(str(root))
    ino = os.stat(root / "system.slice" / "nginx.service").st_ino
    assert mapping[ino] == "/system.slice/nginx.service"
    assert mapping[os.stat(root).st_ino] == "/"
    assert mapping[os.stat(root / "user.slice/user-1000.slice/session-3.scope").st_ino] == \
        "/user.slice/user-1000.slice/session-3.scope"
    assert os.stat(root / "cgroup.procs").st_ino not in mapping
    assert len(mapping) == 7


def test_resolver_rescans_on_miss_but_not_in_a_storm(tmpfs_path):
    root = tmpfs_path / "cg"
    _make_tree(root)
    now = [100.0]
    resolver = CgroupResolver(str(root), min_rescan_interval=1.0, clock=lambda: now[0])
    nginx = os.stat(root / "system.slice/nginx.service").st_ino
    assert resolver.path_for(nginx) == "/system.slice/nginx.service"
    assert resolver.scans == 1
    assert resolver.path_for(nginx) == "/system.slice/nginx.service"
    assert resolver.scans == 1                               # hit: no scan

    os.makedirs(root / "system.slice/new.service")
    new = os.stat(root / "system.slice/new.service").st_ino
    now[0] += 0.1
    for _ in range(100):                                     # burst of misses inside the interval
        assert resolver.path_for(new) is None
    assert resolver.scans == 1
    assert resolver.misses == 100

    now[0] += 1.0
    assert resolver.path_for(new) == "/system.slice/new.service"
    assert resolver.scans == 2
    path, workload = resolver.workload_for(new)
    assert path == "/system.slice/new.service"
    assert workload.unit == "new.service"
