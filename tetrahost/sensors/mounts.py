"""Mount the pseudo file systems BPF needs when the host has not.

systemd hosts mount them at boot; minimal hosts and test guests may not.
"""
from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)

NEEDED = (
    ("bpf", "/sys/fs/bpf"),                  # pinning
    ("tracefs", "/sys/kernel/tracing"),      # tracepoint ids, kprobe_events
    # lockdown mode and the active LSM list: whether BPF-LSM hooks take effect
    ("securityfs", "/sys/kernel/security"),
)


def mounted_types(mountinfo: str = "/proc/self/mounts") -> dict[str, str]:
    with open(mountinfo) as f:
        return {fields[1]: fields[2] for fields in (line.split() for line in f) if len(fields) > 2}


def ensure_mounted(needed=NEEDED) -> list[str]:
    """Mount what is missing; returns the mount points it mounted."""
    mounts = mounted_types()
    done = []
    for fstype, target in needed:
        if mounts.get(target) == fstype:
            continue
        if not os.path.isdir(target):
            log.warning("cannot mount %s: %s does not exist", fstype, target)
            continue
        rc = subprocess.run(["mount", "-t", fstype, fstype, target], capture_output=True, text=True)
        if rc.returncode:
            log.warning("mount -t %s %s failed: %s", fstype, target, rc.stderr.strip())
        else:
            done.append(target)
    return done
