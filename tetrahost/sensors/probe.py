"""What this kernel lets tetrahost hook, found out by loading tiny programs.

Version numbers and config files lie (backports, vendor patches, lockdown,
LSM order), so every capability is proven by really loading one program of
build/bpf/probe.bpf.o and attaching it (then detaching at once).  When it
fails, the reason is the errno, the verifier's own words and evidence read
from the running system (tracefs, securityfs, the kernel config if shipped),
never a guess from the release string.

`probe_kernel()` gives one `Capability` per hook kind, for people (render_text,
render_json); `kernel_features()` folds them into `KernelFeatures` booleans the
daemon chooses hooks by, probed once per process (and kept for the boot:
sensors/probe_cache.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import json
import logging
import os
import signal
import subprocess
import threading

from tetrahost.sensors import probe_cache
from tetrahost.sensors.mounts import ensure_mounted
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

# Slots of probe_hits / probe_config: same order as csrc/bpf/probe.bpf.c.
HIT_SLOTS = ("tracepoint", "raw_tracepoint", "kprobe", "kretprobe", "kprobe_multi", "fentry", "fexit",
             "fmod_ret", "lsm", "send_signal", "override_return", "ringbuf", "uprobe", "probe_write_user",
             "ima_hash")
CFG_TGID, CFG_SIGNAL, CFG_SYSCALL, CFG_WRITE_ADDR = 0, 1, 2, 3
SYS_GETPPID = 110          # x86_64; a syscall nothing else in this process makes while probing
OVERRIDE_TARGET = "__x64_sys_getppid"   # syscall entries are on the error-injection list
TRACEFS, SECURITYFS = "/sys/kernel/tracing", "/sys/kernel/security"
CONFIG_KEYS = ("CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS", "CONFIG_FPROBE", "CONFIG_BPF_LSM",
               "CONFIG_BPF_KPROBE_OVERRIDE", "CONFIG_FUNCTION_ERROR_INJECTION",
               "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "CONFIG_DEBUG_INFO_BTF", "CONFIG_LSM",
               "CONFIG_UPROBES", "CONFIG_UPROBE_EVENTS")


class ProbeError(RuntimeError):
    """Probing itself could not run (not root, probe object missing)."""


@dataclasses.dataclass
class Capability:
    name: str
    available: bool
    detail: str              # why not (or what was proven)
    method: str              # what was loaded and attached
    stage: str = "ok"        # where it failed: "load", "attach", "effect", or "ok"
    errno: str | None = None
    fired: bool | None = None   # None: nothing was done to trigger it


@dataclasses.dataclass(frozen=True)
class KernelFeatures:
    """What the daemon may attach; lsm means effective (loads AND bpf is an active LSM)."""
    tracepoint: bool
    raw_tracepoint: bool
    kprobe: bool
    kretprobe: bool
    kprobe_multi: bool
    fentry: bool
    fexit: bool
    fmod_ret: bool
    lsm: bool
    send_signal: bool
    override_return: bool
    ringbuf: bool
    btf: bool
    uprobe: bool = False
    probe_write_user: bool = False     # the USDT Set action (bpf_probe_write_user)
    ima_hash: bool = False             # imaHash on Post: sleepable BPF-LSM + bpf_ima_file_hash, IMA hashing


@dataclasses.dataclass
class Evidence:
    """Facts read from the running system that explain a failure."""
    release: str
    btf: str | None                    # /sys/kernel/btf/vmlinux, or None
    lockdown: str | None               # the [selected] mode
    lsms: list[str] | None             # active LSMs, in order
    kprobe_events: bool | None         # tracefs has kprobe_events (None: no tracefs)
    kprobe_pmu: bool                   # perf's "kprobe" event source exists
    ftrace_functions: str              # "readable", or why tracefs's function list is not
    config_source: str | None
    config: dict[str, str]             # CONFIG_KPROBES -> "y" / "not set"; empty if no config
    libbpf: str
    mounted: list[str]                 # what probing had to mount

    def cfg(self, key: str) -> str | None:
        return self.config.get(key) if self.config_source else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _kernel_config(release: str) -> tuple[str | None, dict[str, str]]:
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{release}", open)):
        try:
            with opener(path, "rt") as f:
                text = f.read()
        except OSError:
            continue
        found = {key: "not set" for key in CONFIG_KEYS}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key in found:
                found[key] = value.strip('"')
        return path, found
    return None, {}


def gather_evidence(mounted: list[str] | None = None) -> Evidence:
    from tetrahost.bpf.native import ffi, lib

    release = os.uname().release
    lockdown = _read(f"{SECURITYFS}/lockdown")
    if lockdown and "[" in lockdown:
        lockdown = lockdown.split("[", 1)[1].split("]", 1)[0]
    lsm = _read(f"{SECURITYFS}/lsm")
    try:
        with open(f"{TRACEFS}/available_filter_functions", "rb") as f:
            f.read(1)
        ftrace = "readable"
    except OSError as exc:
        ftrace = f"{TRACEFS}/available_filter_functions: {_errname(exc.errno)}"
    source, config = _kernel_config(release)
    return Evidence(
        release=release,
        btf="/sys/kernel/btf/vmlinux" if os.path.exists("/sys/kernel/btf/vmlinux") else None,
        lockdown=lockdown,
        lsms=lsm.split(",") if lsm is not None else None,
        kprobe_events=os.path.exists(f"{TRACEFS}/kprobe_events") if os.path.isdir(f"{TRACEFS}/events") else None,
        kprobe_pmu=os.path.exists("/sys/bus/event_source/devices/kprobe"),
        ftrace_functions=ftrace, config_source=source, config=config,
        libbpf=ffi.string(lib.libbpf_version_string()).decode(), mounted=mounted or [])


def _errname(err: int) -> str:
    from tetrahost.bpf.errors import errno_name
    return errno_name(err)


# -- loading one probe ------------------------------------------------------

@contextlib.contextmanager
def load_probe(program: str, tgid: int = 0, obj_path=None):
    """Open probe.bpf.o with only `program` to load; yield the loaded BpfObject.

    The ring buffer map is created only for probe_ringbuf, so a kernel without
    ring buffers fails that probe alone.  `tgid` narrows per-process hooks.
    """
    from tetrahost.bpf import BpfObject
    from tetrahost.bpf.native import check_rc, lib

    with BpfObject(obj_path or find_object("probe")) as obj:
        for prog in obj.programs.values():
            prog.autoload = prog.name == program
        if program != "probe_ringbuf":
            rb = obj.map("probe_events")
            check_rc(lib.bpf_map__set_autocreate(rb._ptr, False), "skip ring buffer map")
        obj.load()
        obj.map("probe_config").typed("uint32_t", "uint64_t").update(CFG_TGID, tgid)
        obj.map("probe_hits").typed("uint32_t", "uint64_t")
        yield obj


def hits(obj, slot: str) -> int:
    return int(obj.map("probe_hits").lookup(HIT_SLOTS.index(slot), 0))


def _exec_true() -> None:
    subprocess.run(["/bin/true"], check=False)


def _open_a_file() -> None:
    os.close(os.open("/dev/null", os.O_RDONLY))


def _fire_send_signal(obj) -> bool | None:
    """Have the program signal this process once; True if the signal came."""
    if threading.current_thread() is not threading.main_thread():
        return None          # Python handles signals only in the main thread
    got = []
    cfg = obj.map("probe_config")
    old = signal.signal(signal.SIGURG, lambda *_: got.append(1))
    try:
        cfg.update(CFG_SYSCALL, SYS_GETPPID)
        cfg.update(CFG_SIGNAL, int(signal.SIGURG))
        os.getppid()
        for _ in range(100):          # the handler runs at the next bytecode boundaries
            if got:
                break
        cfg.update(CFG_SIGNAL, 0)
    finally:
        signal.signal(signal.SIGURG, old)
    return bool(got)


def own_libc() -> str:
    """The C library this process runs (from /proc/self/maps): where the
    uprobe probe attaches, limited to this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(maxsplit=5)[5].strip() if len(line.split(maxsplit=5)) == 6 else ""
            if os.path.basename(path).startswith("libc.so"):
                return path
    raise FileNotFoundError("no libc.so mapped in this process (a static build?)")


def _attach_uprobe(prog):
    from tetrahost.bpf import BpfError
    try:
        libc = own_libc()
    except OSError as exc:
        raise BpfError(errno.ENOENT, f"uprobe probe: {exc}") from None
    return prog.attach_uprobe(libc, "getppid", pid=os.getpid())


_WRITE_MARKER = 0x7465747261686f73      # probe.bpf.c writes it


def _fire_probe_write_user(obj) -> bool:
    """Have the program write into a buffer of ours; True if the bytes came."""
    import ctypes
    buf = ctypes.c_uint64(0)
    cfg = obj.map("probe_config")
    cfg.update(CFG_WRITE_ADDR, ctypes.addressof(buf))
    try:
        os.getppid()
    finally:
        cfg.update(CFG_WRITE_ADDR, 0)
    return buf.value == _WRITE_MARKER


def _fire_ringbuf(obj) -> bool:
    from tetrahost.bpf import RingBuffer

    records = []
    obj.map("probe_config").update(CFG_SYSCALL, SYS_GETPPID)
    with RingBuffer(obj.map("probe_events"), records.append) as rb:
        os.getppid()
        rb.poll(200)
    return bool(records)


# name, program, how to attach, how to make it fire (None: not triggered)
_PROBES = (
    ("tracepoint", "probe_tracepoint", lambda p: p.attach(), None),
    ("raw_tracepoint", "probe_raw_tp", lambda p: p.attach(), lambda o: os.getppid()),
    ("kprobe", "probe_kprobe", lambda p: p.attach_kprobe("security_file_open"), lambda o: _open_a_file()),
    ("kretprobe", "probe_kretprobe", lambda p: p.attach_kprobe("security_file_open", retprobe=True),
     lambda o: _open_a_file()),
    ("kprobe_multi", "probe_kprobe_multi", lambda p: p.attach(), lambda o: _open_a_file()),
    ("fentry", "probe_fentry", lambda p: p.attach_trace(), lambda o: _open_a_file()),
    ("fexit", "probe_fexit", lambda p: p.attach_trace(), lambda o: _open_a_file()),
    ("fmod_ret", "probe_fmod_ret", lambda p: p.attach_trace(), lambda o: _open_a_file()),
    ("lsm", "probe_lsm", lambda p: p.attach_lsm(), None),
    ("send_signal", "probe_send_signal", lambda p: p.attach(), _fire_send_signal),
    ("override_return", "probe_override", lambda p: p.attach_kprobe(OVERRIDE_TARGET), None),
    ("ringbuf", "probe_ringbuf", lambda p: p.attach(), _fire_ringbuf),
    ("uprobe", "probe_uprobe", _attach_uprobe, lambda o: os.getppid()),
    ("probe_write_user", "probe_write_user", _attach_uprobe, _fire_probe_write_user),
    ("ima_hash", "probe_ima_hash", lambda p: p.attach_lsm(), lambda o: _exec_true()),
)
CAPABILITY_NAMES = tuple(p[0] for p in _PROBES)


def _method(name: str, section: str) -> str:
    target = {"override_return": f"kprobe/{OVERRIDE_TARGET} calling bpf_override_return",
              "uprobe": "uprobe on libc getppid of this process",
              "ima_hash": f"{section} (sleepable) calling bpf_ima_file_hash on an exec of /bin/true",
              "probe_write_user": "uprobe on libc getppid of this process calling bpf_probe_write_user",
              "send_signal": f"{section} calling bpf_send_signal",
              "ringbuf": f"ringbuf map + {section} calling bpf_ringbuf_output"}.get(name, section)
    return f"load+attach {target}"


def _verifier_says(log: list[str]) -> str | None:
    """The verifier's reason: its last line that is neither libbpf's framing
    nor the closing statistics."""
    skip = ("libbpf:", "processed ", "verification time", "stack depth", "-- ", "mark_read", "Validating")
    for line in reversed(log):
        line = line.strip()
        if line and not line.startswith(skip) and not line[:1].isdigit() and not line.startswith(";"):
            return line
    return None


def _probe_one(name, program, attach, fire, ev: Evidence) -> Capability:
    from tetrahost.bpf import BpfError

    method, stage = f"load+attach {program}", "load"
    try:
        with load_probe(program, tgid=os.getpid()) as obj:
            prog = obj.program(program)
            method = _method(name, prog.section)
            stage = "attach"
            link = attach(prog)
            try:
                fired = None
                if fire is not None:
                    result = fire(obj)
                    fired = result if isinstance(result, bool) else None
                    if name not in ("send_signal", "ringbuf", "probe_write_user"):
                        fired = hits(obj, name) > 0
            finally:
                link.destroy()
    except BpfError as exc:
        why = f"{stage} failed: {_errname(exc.errno)}"
        said = _verifier_says(exc.log) if stage == "load" else None
        if stage == "load":
            why += f"; verifier: {said}" if said else "; no verifier log (refused before verification)"
        cause = explain(name, stage, exc.errno, said, ev)
        return Capability(name, False, f"{why}; {cause}" if cause else why, method, stage, _errname(exc.errno))
    detail = "loaded and attached" + {True: ", fired", False: ", attached but did not fire", None: ""}[fired]
    if name in ("lsm", "ima_hash") and not (ev.lsms and "bpf" in ev.lsms):
        lsms = ",".join(ev.lsms) if ev.lsms is not None else "unknown (no securityfs)"
        return Capability(name, False, f"{detail} but inert: 'bpf' is not an active LSM ({lsms}); "
                          "boot with lsm=...,bpf", method, "effect", None, fired)
    if name == "ima_hash" and fired is False:
        # IMA is in the LSM list only since 6.9; before, its securityfs directory shows it
        active = (ev.lsms and "ima" in ev.lsms) or os.path.isdir("/sys/kernel/security/integrity/ima")
        ima = "IMA is active" if active else \
            f"'ima' is not an active LSM ({','.join(ev.lsms or []) or 'unknown'}) or the kernel has no CONFIG_IMA"
        return Capability(name, False, f"{detail}: bpf_ima_file_hash gave no hash ({ima})",
                          method, "effect", None, fired)
    return Capability(name, fired is not False, detail, method, "ok", None, fired)


def _config_says(ev: Evidence, *keys: str) -> str | None:
    """'kernel built without CONFIG_X' for the first option the config lacks."""
    if not ev.config_source:
        return None
    for key in keys:
        if ev.cfg(key) == "not set":
            return f"kernel built without {key} ({ev.config_source})"
    return None


def explain(name: str, stage: str, err: int, verifier: str | None, ev: Evidence) -> str:
    """Evidence from the system for a failed probe (empty if none found)."""
    parts = []
    if name in ("kprobe", "kretprobe", "override_return") and stage == "attach":
        if ev.kprobe_events is False and not ev.kprobe_pmu:
            parts.append("tracefs has no kprobe_events and perf has no kprobe PMU")
        parts.append(_config_says(ev, "CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS"))
    if name == "override_return":
        parts.append(_config_says(ev, "CONFIG_FUNCTION_ERROR_INJECTION", "CONFIG_BPF_KPROBE_OVERRIDE"))
    if name == "kprobe_multi":
        parts.append(_config_says(ev, "CONFIG_FPROBE"))
    if name in ("uprobe", "probe_write_user") and stage == "attach":
        parts.append(_config_says(ev, "CONFIG_UPROBES", "CONFIG_UPROBE_EVENTS"))
    if name == "probe_write_user" and stage == "load":
        # the kernel withholds the helper under lockdown (LOCKDOWN_BPF_WRITE_USER)
        parts.append(f"lockdown={ev.lockdown} forbids bpf_probe_write_user" if ev.lockdown and
                     ev.lockdown != "none" else "the helper was refused (kernel lockdown or no uprobe support)")
    if name == "ima_hash" and stage == "load" and verifier and "unknown func" in verifier:
        parts.append("the kernel has no bpf_ima_file_hash helper (Linux 6.0+)")
    if name in ("fentry", "fexit", "fmod_ret", "lsm", "ima_hash"):
        if ev.btf is None:
            parts.append("no /sys/kernel/btf/vmlinux (kernel BTF needed)")
        if ev.ftrace_functions != "readable":
            parts.append(f"function tracing is restricted on this kernel ({ev.ftrace_functions})")
        parts.append(_config_says(ev, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"))
        if err == 1 and ev.lockdown and ev.lockdown != "none":
            parts.append(f"lockdown={ev.lockdown}")
    if name in ("lsm", "ima_hash"):
        parts.append(_config_says(ev, "CONFIG_BPF_LSM"))
        if ev.lsms is not None and "bpf" not in ev.lsms:
            parts.append(f"'bpf' not in active LSMs ({','.join(ev.lsms)})")
    found = [p for p in parts if p]
    if not found and not ev.config_source:
        found.append("no kernel config (/proc/config.gz, /boot/config-*) to tell why")
    return "; ".join(found)


def _check_can_probe() -> None:
    if os.geteuid() != 0:
        raise ProbeError("tetrahost probe needs root (CAP_BPF/CAP_SYS_ADMIN) to load test programs")
    try:
        find_object("probe")
    except FileNotFoundError as exc:
        raise ProbeError(str(exc)) from None


def probe_kernel(mount: bool = True, evidence: Evidence | None = None) -> list[Capability]:
    """Probe every capability, one program at a time; needs root."""
    _check_can_probe()
    mounted = ensure_mounted() if mount else []
    ev = evidence or gather_evidence(mounted)
    return [_probe_one(*spec, ev) for spec in _PROBES]


def features_from(caps: list[Capability], ev: Evidence | None = None) -> KernelFeatures:
    by_name = {c.name: c.available for c in caps}
    btf = (ev.btf is not None) if ev else os.path.exists("/sys/kernel/btf/vmlinux")
    return KernelFeatures(btf=btf, **{name: by_name.get(name, False) for name in CAPABILITY_NAMES})


_cache: tuple[KernelFeatures, list[Capability], Evidence] | None = None
_cache_lock = threading.Lock()


# Features the daemon must not use even where the kernel has them: lets the
# tests drive the fentry/fexit paths on a kernel that also has kprobes.
AVOID_ENV = "TETRAHOST_AVOID_FEATURES"


def kernel_features(refresh: bool = False) -> KernelFeatures:
    """The daemon's entry point: probe once per process, then answer from memory."""
    features = probe_cached(refresh)[0]
    avoid = {name.strip() for name in os.environ.get(AVOID_ENV, "").split(",") if name.strip()}
    unknown = avoid - set(CAPABILITY_NAMES)
    if unknown:
        raise ProbeError(f"{AVOID_ENV}: unknown feature(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(CAPABILITY_NAMES)})")
    if avoid:
        log.warning("%s: not using %s", AVOID_ENV, ", ".join(sorted(avoid)))
        features = dataclasses.replace(features, **{name: False for name in avoid})
    return features


def probe_cached(refresh: bool = False) -> tuple[KernelFeatures, list[Capability], Evidence]:
    """Probe once per process, and once per boot where the answer was kept
    (sensors/probe_cache.py: same evidence, same probe object); refresh: probe
    now whatever was kept, and keep the new answer."""
    global _cache
    with _cache_lock:
        if _cache is None or refresh:
            _check_can_probe()       # before mounting anything
            ev = gather_evidence(ensure_mounted())
            key = probe_cache.cache_key(ev, str(find_object("probe")))
            caps = None if refresh else probe_cache.load(key, Capability)
            if caps is None:
                caps = probe_kernel(mount=False, evidence=ev)
                probe_cache.store(key, caps)
            _cache = (features_from(caps, ev), caps, ev)
        return _cache


# -- rendering --------------------------------------------------------------

def render_text(caps: list[Capability], ev: Evidence) -> str:
    lsms = ",".join(ev.lsms) if ev.lsms is not None else "unknown"
    head = [f"kernel {ev.release}  btf {'yes' if ev.btf else 'no'}  lockdown {ev.lockdown or 'unknown'}  "
            f"lsm {lsms}  libbpf {ev.libbpf}  config {ev.config_source or 'none'}"]
    width = max(len(c.name) for c in caps) + 2
    lines = [f"{c.name:<{width}}{'yes' if c.available else 'no':<5}{c.detail}" for c in caps]
    return "\n".join(head + lines) + "\n"


def render_json(caps: list[Capability], ev: Evidence) -> str:
    doc = {"kernel": dataclasses.asdict(ev),
           "capabilities": [dataclasses.asdict(c) for c in caps],
           "features": dataclasses.asdict(features_from(caps, ev))}
    return json.dumps(doc, indent=2) + "\n"
