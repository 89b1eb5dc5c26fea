"""What the agent's BPF programs cost the kernel: runs and run time per program.

The kernel counts them in bpf_prog_info (run_cnt, run_time_ns) only while
`kernel.bpf_stats_enabled` is 1 (sysctl; counting costs a little on every
run, so it is off by default and the agent does not switch it on).  Served
as Tetragon's tetragon_overhead_program_runs_total and
tetragon_overhead_program_seconds_total (tetrahost/metrics.py).

Read on the event loop's thread, into the status snapshot the metrics
collector asks for (tetrahost/runtime/snapshot.py): never while a policy
replace is closing the objects read.
"""
from __future__ import annotations

from dataclasses import dataclass

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@dataclass(frozen=True)
class ProgramCost:
    policy: str         # "" for the process sensor
    sensor: str         # "process", or the hook (e.g. "kprobe:security_file_open")
    attach: str         # how it is attached (kprobe, lsm, sys_enter, ...; "tracepoint" for the process sensor)
    section: str        # the program's ELF section
    runs: int
    run_time_ns: int


def stats_enabled(path: str = STATS_SYSCTL) -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _run_stats(program) -> tuple[int, int] | None:
    from tetrahost.bpf.native import ffi, lib
    fd = program.fd
    if fd < 0:
        return None
    info = ffi.new("struct bpf_prog_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) != 0:
        return None
    return info.run_cnt, info.run_time_ns


def _programs(sensor, pm):
    """(policy, sensor, attach, program) of every loaded program: the process sensor's and the policies'."""
    obj = getattr(sensor, "obj", None)
    if obj is not None:
        for prog in obj.programs.values():
            yield "", "process", "tracepoint", prog
    if pm is None:
        return
    for name, ps in pm.policies.items():
        for hs in ps.hooks:
            hook_obj = getattr(hs.sensor, "obj", None)
            if hook_obj is None:
                continue
            attach = hs.plan.method if hs.plan is not None else ""
            for prog in hook_obj.programs.values():
                yield name, f"{hs.hook.kind}:{hs.hook.name}", attach, prog


def program_costs(sensor, policies) -> list[ProgramCost]:
    """Runs and run time of every program of the process sensor and the
    PolicyManager `policies` (None: none); [] while kernel.bpf_stats_enabled is off."""
    if not stats_enabled():
        return []
    out = []
    for policy, name, attach, prog in _programs(sensor, policies):
        stats = _run_stats(prog)
        if stats is not None:
            out.append(ProgramCost(policy, name, attach, prog.section, *stats))
    return out
