"""Facts about the Debian 12 guest (the matrix entry booted: 6.1, 6.12, 6.1-rt,
with or without bpf in the lsm= list) that the kernel-function hooks rely on.

Only /sys, /proc and /boot are read (no BPF objects yet), and nothing is
exec'd: an exec costs ~40 ms under the emulated CPU.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

TRACEFS = Path("/sys/kernel/tracing")


def mounts() -> dict[str, str]:
    """Mount point -> file system type."""
    table = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        _source, target, fstype, *_ = line.split()
        table[target] = fstype
    return table


def kernel_config() -> dict[str, str]:
    # The guest sees the host's /boot, which holds this kernel's config.
    path = Path("/boot", f"config-{os.uname().release}")
    config = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            config[key] = value
    return config


def add_probe_event(line: str) -> None:
    # Append without O_TRUNC (which would clear every kprobe); no Python "a"
    # mode either: its seek to the end fails with EINVAL on tracefs.
    fd = os.open(TRACEFS / "kprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


KERNEL = os.environ.get("TETRAHOST_VM_KERNEL", "6.1")     # run_pytest.sh: the matrix entry


def lsm_parameter() -> list[str] | None:
    """The lsm= list of the kernel command line, if one was given."""
    for param in Path("/proc/cmdline").read_text().split():
        if param.startswith("lsm="):
            return param.removeprefix("lsm=").split(",")
    return None


def test_kernel_is_the_matrix_entry():
    release = os.uname().release
    version, _, flavour = KERNEL.partition("-")
    assert release.startswith(version + "."), release
    assert release.endswith(f"-{flavour}-amd64" if flavour else "-amd64"), release
    if not flavour:
        assert "-rt-" not in release and "-cloud-" not in release, release
    if flavour == "rt":
        assert kernel_config().get("CONFIG_PREEMPT_RT") == "y"


@pytest.mark.parametrize(
    ("target", "fstype"),
    [
        ("/sys/kernel/tracing", "tracefs"),
        ("/sys/kernel/security", "securityfs"),
        ("/sys/fs/bpf", "bpf"),
    ],
)
def test_harness_mounted(target, fstype):
    assert mounts().get(target) == fstype


def test_harness_leaves_sigint_to_the_tests():
    """run_pytest.sh starts pytest in the background, where sh ignores SIGINT;
    the tests stop their children (`tetra getevents`, agents) with SIGINT, and a
    child inheriting "ignored" never stops."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL


def test_bpf_is_an_active_lsm_unless_left_out():
    lsms = Path("/sys/kernel/security/lsm").read_text().strip().split(",")
    wanted = lsm_parameter()
    if wanted is not None and "bpf" not in wanted:   # the matrix's "BPF-LSM inactive" entry
        assert "bpf" not in lsms, lsms
    else:
        assert "bpf" in lsms, lsms


def test_btf_for_co_re():
    vmlinux = Path("/sys/kernel/btf/vmlinux")
    assert vmlinux.is_file()
    assert vmlinux.stat().st_size > 1_000_000  # a real BTF blob, several MB


def test_kernel_config_has_the_hooks_we_use():
    config = kernel_config()
    for option in ("CONFIG_KPROBES", "CONFIG_BPF_LSM", "CONFIG_DEBUG_INFO_BTF",
                   "CONFIG_BPF_SYSCALL", "CONFIG_FUNCTION_TRACER"):
        assert config.get(option) == "y", option
    # No bpf_override_return here: Override must go through BPF-LSM or fmod_ret.
    assert "CONFIG_FUNCTION_ERROR_INJECTION" not in config


def test_kprobe_on_security_function():
    """A kprobe on security_file_open can really be created (and removed)."""
    events = TRACEFS / "kprobe_events"
    assert events.is_file()
    name = "tetrahost_vm_smoke"
    add_probe_event(f"p:{name} security_file_open")
    try:
        assert (TRACEFS / "events" / "kprobes" / name).is_dir()
        assert f"p:kprobes/{name} security_file_open" in events.read_text()
    finally:
        add_probe_event(f"-:{name}")
    assert name not in events.read_text()
