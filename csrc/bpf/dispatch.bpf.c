// SPDX-License-Identifier: GPL-2.0-only
/*
 * The syscall dispatcher (see lib/dispatch.bpf.h): one program on
 * raw_syscalls sys_enter and one on sys_exit, attached only while a
 * syscall-fallback hook exists, tail-calling the hooks of each syscall.
 */
#include "lib/common.bpf.h"
#include "lib/dispatch.bpf.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline bool hooked(void *map, __u32 nr)
{
	__u32 *n = bpf_map_lookup_elem(map, &nr);

	return n && *n;
}

SEC("raw_tp/sys_enter")
int th_dispatch_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 nr = ctx->args[1];

	if (nr < TH_SYSCALL_SET_BITS && hooked(&sys_enter_hooked, nr))
		dispatch_after(ctx, &sys_enter_chains, &sys_enter_progs, nr, TH_DISPATCH_START);
	return 0;
}

SEC("raw_tp/sys_exit")
int th_dispatch_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 nr = BPF_CORE_READ(regs, orig_ax);

	if (nr < TH_SYSCALL_SET_BITS && hooked(&sys_exit_hooked, nr))
		dispatch_after(ctx, &sys_exit_chains, &sys_exit_progs, nr, TH_DISPATCH_START);
	return 0;
}
