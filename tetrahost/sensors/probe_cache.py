"""The kernel probe's answer, kept for the rest of the boot.

Why: probing loads and attaches one program per hook kind (0.4-0.5 s on this
2-core host, ~5 s in a QEMU guest without KVM), and every agent start and
every `tetrahost policy check` paid it again.  What the kernel allows does
not change within a boot unless something the evidence shows does (lockdown
raised, the active LSMs, the kernel's config) or tetrahost's probe programs
do (another build, another libbpf).  So the answer is kept under a key made
of the boot id, all the evidence but what probing mounted, and a hash of the
probe object; a different key, or a file that is not ours alone, means a new
probe.  `tetrahost probe` always probes (and rewrites the file).

The file lives in /run/tetrahost (tmpfs: gone at reboot; systemd also
removes the directory when the service stops).  $TETRAHOST_PROBE_CACHE
names another path, or "off".
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat

from tetrahost.atomic_write import write_text_atomically

log = logging.getLogger(__name__)

DEFAULT_PATH = "/run/tetrahost/probe.json"
ENV = "TETRAHOST_PROBE_CACHE"
FORMAT = 1


def cache_path() -> str | None:
    path = os.environ.get(ENV, DEFAULT_PATH)
    return None if path in ("", "off") else path


def cache_key(evidence, probe_object: str) -> str:
    """What the answer depends on, as one hash."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        with open(probe_object, "rb") as f:
            program = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""       # no key: never cached
    seen = {k: v for k, v in dataclasses.asdict(evidence).items() if k != "mounted"}
    text = json.dumps({"format": FORMAT, "boot": boot, "program": program, "evidence": seen}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _private(st: os.stat_result) -> bool:
    """Ours, and nobody else may write it."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def load(key: str, capability_type) -> list | None:
    """The capabilities kept under this key, or None (absent, stale, not ours alone, malformed)."""
    path = cache_path()
    if not key or path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st) or not _private(os.stat(os.path.dirname(path))) \
                or st.st_size > 1 << 20:
            log.warning("%s: not a private regular file of ours; probing the kernel instead", path)
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            doc = json.loads(f.read())
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None
        fields = {f.name for f in dataclasses.fields(capability_type)}
        caps = [capability_type(**c) for c in doc["capabilities"] if isinstance(c, dict) and set(c) <= fields]
        if len(caps) != len(doc["capabilities"]):
            return None
        return caps
    except (OSError, ValueError, TypeError, KeyError):
        return None
    finally:
        os.close(fd)


def store(key: str, caps: list) -> None:
    """Keep the answer; a failure only costs the next process a probe."""
    path = cache_path()
    if not key or path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        doc = {"key": key, "capabilities": [dataclasses.asdict(c) for c in caps]}
        write_text_atomically(path, json.dumps(doc) + "\n", mode=0o600)
    except OSError as exc:
        log.debug("keeping the probe's answer in %s failed: %s", path, exc)
