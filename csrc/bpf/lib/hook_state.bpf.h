/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: their maps (configuration, string sets, parked return-probe
 * events, rate limits) and the per-CPU scratch slots a run claims.
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_STATE_BPF_H
#define TETRAHOST_HOOK_STATE_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct th_hook_config);
} hook_config SEC(".maps");

/* Equal/In string sets: key = set_id + zero-padded string (th_str_key minus prefixlen). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TH_STR_SET_ENTRIES);
	__uint(key_size, sizeof(struct th_str_key) - 4);
	__uint(value_size, 1);
} str_equal SEC(".maps");

/* InMap/NotInMap integer sets: key = set_id + value (struct th_int_key). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TH_INT_SET_ENTRIES);
	__type(key, struct th_int_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} int_set SEC(".maps");

/* kernelStackTrace / userStackTrace: stacks by id, read by user space when it
 * renders the event.  One entry unless the hook's selectors ask for stacks
 * (user space sizes it to TH_STACK_ENTRIES before load): a stack map is
 * allocated whole. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, TH_STACK_DEPTH * sizeof(__u64));
} stack_traces SEC(".maps");

/* Prefix string sets: longest-prefix match over set_id + string. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TH_STR_SET_ENTRIES);
	__uint(key_size, sizeof(struct th_str_key));
	__uint(value_size, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} str_prefix SEC(".maps");

/* Return probes: the event the entry program matched, parked per thread
 * until the function returns (the return program completes it with the
 * return value and posts it).  Allocated on use: hooks without a return
 * probe never touch it.  A thread re-entering the hooked function before
 * it returns replaces its parked event (the outer call's is then lost). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct th_hook_event);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pending SEC(".maps");

/* Postfix string sets: the same as str_prefix with every string reversed, so
 * a suffix of the argument is a prefix of its reversal. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TH_STR_SET_ENTRIES);
	__uint(key_size, sizeof(struct th_str_key));
	__uint(value_size, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} str_postfix SEC(".maps");

/* Last post per (selector, thread/process/everyone) for Post's rateLimit;
 * LRU so that exited tasks age out. */
struct rate_key {
	__u32 id;
	__u32 selector;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct rate_key);
	__type(value, __u64);
} rate_limit SEC(".maps");

/* Whether a post is within its selector's rate limit (and record it). */
static __always_inline bool rate_allows(const struct th_selector *sel, __u32 index, __u64 pid_tgid, __u64 now)
{
	if (!sel->rate_limit_ns)
		return true;
	struct rate_key key = {
		.id = sel->rate_scope == TH_RATE_GLOBAL ? 0 :
		      sel->rate_scope == TH_RATE_PROCESS ? pid_tgid >> 32 : (__u32)pid_tgid,
		.selector = index,
	};
	__u64 *last = bpf_map_lookup_elem(&rate_limit, &key);

	if (last && now - *last < sel->rate_limit_ns)
		return false;
	bpf_map_update_elem(&rate_limit, &key, &now, BPF_ANY);
	return true;
}

struct hook_scratch {
	__u64 owner;                  /* claimed by (pid_tgid | 1), 0 when free */
	struct th_hook_event ev;
	struct th_str_key key;
	struct path_scratch path;
	__u8 binary[TH_STR_SLOT];     /* the calling task's executable, zero padded */
	__u32 binary_len;
	__u8 binary_is_target;        /* after an exec: `binary` is the exec target argument's
	                               * path, not resolved again (run_hook) */
	__u32 arg_str_len[TH_MAX_ARGS];
	/* Postfix looks at a string's end: for one longer than TH_STR_MAX (its
	 * slot holds the start), tail[i] holds its last TH_STR_MAX bytes and
	 * has_tail[i] is set; i = argument, TH_TAIL_BINARY = the caller's binary.
	 * 8 rows so that an index masked with 7 stays inside. */
	__u8 tail[8][TH_STR_SLOT];
	__u8 has_tail[8];
	/* a path whose root the walk did not reach (deeper than TH_PATH_DEPTH):
	 * its root end is unknown, Prefix/Equal cannot decide (see string_in_set) */
	__u8 unresolved[8];
	__u8 rev[TH_STR_SLOT];        /* Postfix: a string slot reversed */
	/* matchPIDs with followForks/isNamespacePID: the process and its
	 * ancestors, collected once per event (valid while anc_ktime equals
	 * ev.hdr.ktime, so run_hook needs no reset for it) */
	__u64 anc_ktime;
	__u32 nanc;
	__u32 anc_pid[TH_PID_ANCESTORS];    /* tgid, root pid namespace */
	__u32 anc_nspid[TH_PID_ANCESTORS];  /* tgid in its own pid namespace */
	/* never used: puts the network slot's layout into the object's BTF so
	 * the layout test compares it with cffi's (tests/unit/test_hook_json_network.py) */
	struct th_sock_tuple net_layout;
	struct th_cred cred_layout;         /* likewise for the cred, user_ns and char_buf slots */
	struct th_char_buf buf_layout;
};

/*
 * Scratch space, several slots per CPU.  A program can be preempted (syscall
 * tracepoints are faultable since 6.13 and run preemptible; kprobes under
 * PREEMPT_RT), and another task on the same CPU then runs the same program:
 * one shared slot would be overwritten mid-evaluation and a selector would
 * see the other task's arguments.  Each run claims a free slot with a
 * compare-and-swap and frees it when done.
 */
#define TH_SCRATCH_SLOTS 4
#define TH_TAIL_BINARY TH_MAX_ARGS

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TH_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct hook_scratch);
} hook_heap SEC(".maps");

/* Argument i's TH_STR_SLOT bytes in the event being built.  Masked twice so
 * the verifier sees the offset inside the scratch value whatever it knows of i. */
static __always_inline __u8 *arg_slot(struct hook_scratch *s, __u32 i)
{
	return &s->ev.data[(i & 7) * TH_STR_SLOT & 2047];
}

static __always_inline struct hook_scratch *try_scratch(__u32 i, __u64 owner, __u32 *slot)
{
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &i);

	if (s && __sync_val_compare_and_swap(&s->owner, 0, owner) == 0) {
		*slot = i;
		return s;
	}
	return NULL;
}

/* Written out, not a loop: as a loop, 6.1's verifier sees the same state at
 * the back-edge (the index lives on the stack, imprecise) and rejects it as
 * an infinite loop; clang 14 will not unroll it (early return). */
_Static_assert(TH_SCRATCH_SLOTS == 4, "claim_scratch tries each slot by hand");
static __always_inline struct hook_scratch *claim_scratch(__u64 owner, __u32 *slot)
{
	struct hook_scratch *s = try_scratch(0, owner, slot);

	if (!s)
		s = try_scratch(1, owner, slot);
	if (!s)
		s = try_scratch(2, owner, slot);
	if (!s)
		s = try_scratch(3, owner, slot);
	return s;
}

#endif
