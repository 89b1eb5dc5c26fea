// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kernel capability probes (`tetrahost probe`): one tiny program per hook
 * kind.  User space disables autoload for all of them and loads one at a time
 * from a fresh open of this object, so a kind the kernel lacks fails alone.
 *
 * lib/common.bpf.h is not included on purpose: its ring buffer would then be
 * created for every probe, and a kernel without ring buffers would fail them
 * all.  Only plain array maps are shared; the ring buffer map is created just
 * for the ring buffer probe (user space turns its autocreate off otherwise).
 *
 * Every program counts its runs in `probe_hits` (one slot each) so tests can see it
 * really fired.  Hooks that fire for everybody can be narrowed to one process
 * through `probe_config[CFG_TGID]` (0 = every process).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lib/lsm_ret.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Slots of `probe_hits`; tetrahost/sensors/probe.py has the same numbers. */
enum probe_slot {
	HIT_TRACEPOINT,
	HIT_RAW_TP,
	HIT_KPROBE,
	HIT_KRETPROBE,
	HIT_KPROBE_MULTI,
	HIT_FENTRY,
	HIT_FEXIT,
	HIT_FMOD_RET,
	HIT_LSM,
	HIT_SEND_SIGNAL,
	HIT_OVERRIDE,
	HIT_RINGBUF,
	HIT_UPROBE,
	HIT_PROBE_WRITE_USER,
	HIT_IMA_HASH,
	HIT_SLOTS,
};

/* Slots of `probe_config`, written by user space after load. */
enum probe_cfg {
	CFG_TGID,       /* only count/act for this process (0: everybody) */
	CFG_SIGNAL,     /* send_signal probe: signal number to send (0: none) */
	CFG_SYSCALL,    /* send_signal / ringbuf probes: act on this syscall number */
	CFG_WRITE_ADDR, /* probe_write_user: the user address it writes 8 bytes to */
	CFG_SLOTS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HIT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} probe_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CFG_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} probe_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_events SEC(".maps");

static __always_inline __u64 cfg(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&probe_config, &slot);

	return v ? *v : 0;
}

/* Is the current task the one user space asked about (or did it ask for all)? */
static __always_inline bool wanted(void)
{
	__u64 tgid = cfg(CFG_TGID);

	return !tgid || tgid == (bpf_get_current_pid_tgid() >> 32);
}

static __always_inline void hit(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&probe_hits, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tp/sched/sched_process_exec")
int probe_tracepoint(void *ctx)
{
	hit(HIT_TRACEPOINT);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(probe_raw_tp, struct pt_regs *regs, long id)
{
	if (wanted())
		hit(HIT_RAW_TP);
	return 0;
}

SEC("kprobe/security_file_open")
int BPF_KPROBE(probe_kprobe, struct file *file)
{
	if (wanted())
		hit(HIT_KPROBE);
	return 0;
}

SEC("kretprobe/security_file_open")
int BPF_KRETPROBE(probe_kretprobe, int ret)
{
	if (wanted())
		hit(HIT_KRETPROBE);
	return 0;
}

/* libbpf >= 1.0 knows this section; the kernel needs the fprobe-based
 * BPF_TRACE_KPROBE_MULTI link (5.18+, CONFIG_FPROBE). */
SEC("kprobe.multi/security_file_open")
int probe_kprobe_multi(struct pt_regs *ctx)
{
	if (wanted())
		hit(HIT_KPROBE_MULTI);
	return 0;
}

SEC("fentry/security_file_open")
int BPF_PROG(probe_fentry, struct file *file)
{
	if (wanted())
		hit(HIT_FENTRY);
	return 0;
}

SEC("fexit/security_file_open")
int BPF_PROG(probe_fexit, struct file *file, int ret)
{
	if (wanted())
		hit(HIT_FEXIT);
	return 0;
}

/* Returning 0 keeps the kernel's own result: the probe never changes it. */
SEC("fmod_ret/security_file_open")
int BPF_PROG(probe_fmod_ret, struct file *file)
{
	if (wanted())
		hit(HIT_FMOD_RET);
	return 0;
}

/* Returns the previous programs' verdict unchanged (through lsm_ret: the
 * verifier wants it proven to be 0 or -errno). */
SEC("lsm/bprm_check_security")
long BPF_PROG(probe_lsm, struct linux_binprm *bprm, int ret)
{
	hit(HIT_LSM);
	return lsm_ret(ret);
}

/* imaHash: a sleepable BPF-LSM program (lsm.s) asking IMA for the hash of
 * the file being executed.  Loads only where the kernel has BPF-LSM and the
 * helper (6.0+); counts only when IMA really produced a hash (the helper
 * returns the algorithm, or -EOPNOTSUPP without CONFIG_IMA).  It returns the
 * previous verdict: it never changes an exec. */
SEC("lsm.s/bprm_check_security")
long BPF_PROG(probe_ima_hash, struct linux_binprm *bprm, int ret)
{
	__u8 digest[64];
	__u64 tgid = cfg(CFG_TGID);
	struct task_struct *task = (void *)bpf_get_current_task();

	/* only a child of the probing process: the exec it starts to fire this */
	if (tgid && tgid != (__u64)BPF_CORE_READ(task, real_parent, tgid))
		return lsm_ret(ret);
	if (bpf_ima_file_hash(bprm->file, digest, sizeof(digest)) >= 0)
		hit(HIT_IMA_HASH);
	return lsm_ret(ret);
}

/* bpf_send_signal from a raw tracepoint (what enforcement falls back to on
 * kernels without kprobes or BPF-LSM).  Acts only on one syscall of one
 * process, both set by user space, so attaching it is harmless. */
SEC("raw_tp/sys_enter")
int BPF_PROG(probe_send_signal, struct pt_regs *regs, long id)
{
	__u64 tgid = cfg(CFG_TGID);
	__u64 sig = cfg(CFG_SIGNAL);

	if (!tgid || !sig || tgid != (bpf_get_current_pid_tgid() >> 32) || id != (long)cfg(CFG_SYSCALL))
		return 0;
	hit(HIT_SEND_SIGNAL);
	bpf_send_signal((__u32)sig);
	return 0;
}

/* bpf_override_return exists only with CONFIG_BPF_KPROBE_OVERRIDE; the verifier
 * rejects the call otherwise.  No fixed target: user space attaches it to a
 * function on the error-injection list.  It never overrides for real (the
 * condition needs a tgid user space never sets together with a zero signal). */
SEC("kprobe")
int BPF_KPROBE(probe_override)
{
	__u64 tgid = cfg(CFG_TGID);

	if (tgid && tgid == (bpf_get_current_pid_tgid() >> 32) && cfg(CFG_SIGNAL) == 0xffff) {
		hit(HIT_OVERRIDE);
		bpf_override_return(ctx, 0);
	}
	return 0;
}

/* One record per chosen syscall of the chosen process into the ring buffer. */
SEC("raw_tp/sys_enter")
int BPF_PROG(probe_ringbuf, struct pt_regs *regs, long id)
{
	__u64 tgid = cfg(CFG_TGID);
	__u64 rec;

	if (!tgid || tgid != (bpf_get_current_pid_tgid() >> 32) || id != (long)cfg(CFG_SYSCALL))
		return 0;
	rec = (__u64)id;
	if (bpf_ringbuf_output(&probe_events, &rec, sizeof(rec), 0) == 0)
		hit(HIT_RINGBUF);
	return 0;
}

/* A uprobe: user space attaches it to a libc function of its own process
 * only (pid-filtered), then calls that function. */
SEC("uprobe")
int probe_uprobe(struct pt_regs *ctx)
{
	if (wanted())
		hit(HIT_UPROBE);
	return 0;
}

/* bpf_probe_write_user (the USDT Set action): refused at load when the
 * kernel is locked down; a uprobe on libc getppid of this process writes a
 * marker into a buffer user space names, which user space then reads. */
SEC("uprobe")
int probe_write_user(struct pt_regs *ctx)
{
	__u64 marker = 0x7465747261686f73ULL, addr = cfg(CFG_WRITE_ADDR);

	if (wanted() && addr && !bpf_probe_write_user((void *)addr, &marker, sizeof(marker)))
		hit(HIT_PROBE_WRITE_USER);
	return 0;
}
