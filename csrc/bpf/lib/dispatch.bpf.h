/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The syscall dispatcher's maps and chain walk, shared by csrc/bpf/dispatch.bpf.c
 * (the one program on raw_syscalls sys_enter / sys_exit) and the hook
 * programs it tail-calls (generic.bpf.c th_sys_enter / th_sys_exit).
 *
 * Why: each syscall-fallback hook used to be its own program on sys_enter,
 * so every syscall of every task ran every hook's filter: 100 hooks made
 * each syscall 20x slower.  Now one program per direction runs; a syscall
 * nobody hooks costs one array lookup, and a hooked one tail-calls the hooks
 * of that syscall only, in a chain: each hook, when done, calls the one
 * after itself (found by its own slot: no per-CPU state, which a preempted
 * program could see overwritten).  A tail call never returns; one into an
 * empty slot falls through, so the walk goes on to the next.
 */
#ifndef TH_DISPATCH_BPF_H
#define TH_DISPATCH_BPF_H

/* Hook programs by slot: sys_enter halves and sys_exit halves. */
struct th_dispatch_progs {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, TH_SYS_HOOK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
};
struct th_dispatch_progs sys_enter_progs SEC(".maps");
struct th_dispatch_progs sys_exit_progs SEC(".maps");

/* syscall nr -> the slots hooked on it, in order.  A hash map: user space
 * replaces a chain as one element, which readers see whole (old or new). */
struct th_dispatch_chains {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TH_SYSCALL_SET_BITS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct th_sys_chain);
};
struct th_dispatch_chains sys_enter_chains SEC(".maps");
struct th_dispatch_chains sys_exit_chains SEC(".maps");

/* syscall nr -> its chain's length: the cheap test every syscall pays (an
 * array lookup the verifier inlines, a 4-byte value written whole). */
struct th_dispatch_hooked {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TH_SYSCALL_SET_BITS);
	__type(key, __u32);
	__type(value, __u32);
};
struct th_dispatch_hooked sys_enter_hooked SEC(".maps");
struct th_dispatch_hooked sys_exit_hooked SEC(".maps");

#define TH_DISPATCH_START 0xffffffffU      /* `after`: from the chain's first slot */

/* Tail-call the hooks of syscall nr that come after slot `after` in its
 * chain.  Returns only when none is left (or every call fell through). */
static __always_inline void dispatch_after(void *ctx, void *chains, void *progs, __u32 nr, __u32 after)
{
	struct th_sys_chain *c = bpf_map_lookup_elem(chains, &nr);
	bool go = after == TH_DISPATCH_START;

	if (!c)
		return;
	for (int i = 0; i < TH_SYS_CHAIN_MAX; i++) {
		if (i >= c->n)
			break;
		__u32 slot = c->slot[i];

		if (go)
			bpf_tail_call(ctx, progs, slot);
		else if (slot == after)
			go = true;
	}
}

#endif
