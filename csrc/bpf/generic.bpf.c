// SPDX-License-Identifier: GPL-2.0-only
/*
 * Policy hooks: one generic program per attach kind, configured through maps
 * (no compiler on the user's host).  User space loads one copy of this object
 * per TracingPolicy hook, autoloads only the entry program the kernel
 * supports best for that hook, fills `hook_config` and the string sets, and
 * attaches.  Selectors are evaluated here, actions taken here; only matching
 * activity produces a record.
 */
#include "lib/common.bpf.h"
#include "lib/path.bpf.h"
#include "lib/task.bpf.h"
#include "lib/socktrack.bpf.h"
#include "lib/net.bpf.h"
#include "lib/procstate.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGKILL 9
#define NO_ARG 0xff

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct th_hook_config);
} hook_config SEC(".maps");

/* Equal/In string sets: key = set_id + zero-padded string (th_str_key minus prefixlen). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(struct th_str_key) - 4);
	__uint(value_size, 1);
} str_equal SEC(".maps");

/* Prefix string sets: longest-prefix match over set_id + string. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
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
	__uint(max_entries, 1024);
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
	__u32 binary_ready;
	__u32 arg_str_len[TH_MAX_ARGS];
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TH_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct hook_scratch);
} hook_heap SEC(".maps");

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

/* ---- reading arguments ------------------------------------------------- */

/* Put a walked path into a TH_STR_SLOT-byte, zero-padded slot; returns its length. */
static __always_inline __u32 path_to_slot(struct hook_scratch *s, __u8 *slot, __u32 pos, bool truncated)
{
	__u32 len = TH_PATH_MAX - pos;

	if (len > TH_STR_MAX) {
		len = TH_STR_MAX;
		truncated = true;
	}
	if (truncated)
		s->ev.flags |= TH_HOOK_ARG_TRUNC;
	BARRIER_MASK(len, 255);            /* TH_STR_SLOT - 1 */
	BARRIER_MASK(pos, 4095);           /* TH_PATH_MAX - 1 */
	bpf_probe_read_kernel(slot, len, &s->path.buf[pos]);
	return len;
}

static __always_inline __u32 file_to_slot(struct hook_scratch *s, __u8 *slot, struct file *file)
{
	bool truncated;
	__u32 pos;

	if (!file)
		return 0;
	pos = walk_path(&s->path, __builtin_preserve_access_index(&file->f_path), &truncated);
	return path_to_slot(s, slot, pos, truncated);
}

static __always_inline struct file *fd_to_file(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* char_buf: the first TH_BUF_MAX of `size` bytes at ptr, from user memory for
 * syscall arguments; returns how many were copied (what a matcher compares). */
static __always_inline __u32 buf_to_slot(struct hook_scratch *s, struct th_char_buf *b, __u8 kind,
					 __u64 ptr, __u64 size)
{
	__u32 n = size > TH_BUF_MAX ? TH_BUF_MAX : size;
	long err = 0;

	if (size > TH_BUF_MAX)
		s->ev.flags |= TH_HOOK_ARG_TRUNC;
	BARRIER_MASK(n, 255);                  /* TH_STR_SLOT - 1: inside the slot */
	if (n)
		err = kind == TH_ARG_BUF_USER ? bpf_probe_read_user(b->data, n, (void *)ptr)
					      : bpf_probe_read_kernel(b->data, n, (void *)ptr);
	b->size = (size > TH_BUF_SIZE_MAX ? TH_BUF_SIZE_MAX : (__u32)size) |
		  (err ? 1U << TH_BUF_FAULT_SHIFT : 0);
	return err ? 0 : n;
}

/* Integer arguments: matched with the integer operators. */
static __always_inline bool arg_is_int(__u8 kind)
{
	return kind == TH_ARG_INT || kind == TH_ARG_CAP_SET;
}

/* a subprogram of its own: its locals and the path walk's loop context stay
 * out of the entry program's frame (6.1 caps the whole call chain at 512 bytes).
 * size: the value of the argument holding a char_buf's byte count. */
static __noinline void read_arg(struct hook_scratch *s, __u32 i, __u8 kind, __u64 raw, __u64 size)
{
	__u8 *slot = &s->ev.data[(i & 7) * TH_STR_SLOT & 2047];
	__u32 len = 0;
	bool truncated;
	long n;

	if (i >= TH_MAX_ARGS)
		return;
	if (kind == TH_ARG_INT) {
		*(__u64 *)slot = raw;
		s->ev.arg_len[i] = 8;
		return;
	}
	if (kind == TH_ARG_CAP_SET) {
		*(__u64 *)slot = 0;
		/* 8 bytes: u32[2] before 6.3, one u64 after (see read_caps) */
		bpf_probe_read_kernel(slot, 8, (void *)raw);
		s->ev.arg_len[i] = 8;
		return;
	}
	__builtin_memset(slot, 0, TH_STR_SLOT);
	switch (kind) {
	case TH_ARG_STR_KERNEL:
	case TH_ARG_STR_USER:
		n = kind == TH_ARG_STR_USER ? bpf_probe_read_user_str(slot, TH_STR_MAX + 1, (void *)raw)
					    : bpf_probe_read_kernel_str(slot, TH_STR_MAX + 1, (void *)raw);
		len = n > 0 ? n - 1 : 0;            /* without the NUL */
		if (len >= TH_STR_MAX) {
			len = TH_STR_MAX;
			slot[TH_STR_MAX] = 0;
			s->ev.flags |= TH_HOOK_ARG_TRUNC;
		}
		break;
	case TH_ARG_FILE:
		len = file_to_slot(s, slot, (struct file *)raw);
		break;
	case TH_ARG_BPRM:
		len = file_to_slot(s, slot, BPF_CORE_READ((struct linux_binprm *)raw, file));
		break;
	case TH_ARG_FD:
		len = file_to_slot(s, slot, fd_to_file(raw));
		break;
	case TH_ARG_PATH:
		if (raw)
			len = path_to_slot(s, slot, walk_path(&s->path, (struct path *)raw, &truncated), truncated);
		break;
	case TH_ARG_DENTRY:
		if (raw)
			len = path_to_slot(s, slot, walk_dentry(&s->path, (struct dentry *)raw, &truncated), truncated);
		break;
	case TH_ARG_SOCK ... TH_ARG_NETDEV:
		net_read_arg((struct th_sock_tuple *)slot, kind, raw);
		len = sizeof(struct th_sock_tuple);
		break;
	case TH_ARG_CRED:
		read_cred_arg((struct th_cred *)slot, (const struct cred *)raw);
		len = sizeof(struct th_cred);
		break;
	case TH_ARG_USER_NS:
		read_user_ns((struct th_user_ns *)slot, (const struct user_namespace *)raw);
		len = sizeof(struct th_user_ns);
		break;
	case TH_ARG_BUF_KERNEL:
	case TH_ARG_BUF_USER:
		/* the whole slot goes out (data + size); matchers see the bytes copied */
		s->arg_str_len[i] = buf_to_slot(s, (struct th_char_buf *)slot, kind, raw, size);
		s->ev.arg_len[i] = sizeof(struct th_char_buf);
		return;
	}
	s->arg_str_len[i] = len;
	s->ev.arg_len[i] = len;
}

/* The caller's executable (mm->exe_file), resolved once per event when a
 * selector needs it. */
static __always_inline void resolve_binary(struct hook_scratch *s)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	s->binary_ready = 1;
	__builtin_memset(s->binary, 0, TH_STR_SLOT);
	s->binary_len = file_to_slot(s, s->binary, exe);
}

/* returnCopy: the buffer is filled by the call (read(2)...), so the entry
 * only keeps where it is; copy_returned_buffer reads it at the return. */
static __always_inline void keep_buffer_pointer(struct hook_scratch *s, __u32 i, __u64 ptr)
{
	struct th_char_buf *b = (struct th_char_buf *)&s->ev.data[(i & 7) * TH_STR_SLOT & 2047];

	if (i >= TH_MAX_ARGS)
		return;
	__builtin_memset(b, 0, sizeof(*b));
	*(__u64 *)b->data = ptr;
	s->arg_str_len[i] = 0;
	s->ev.arg_len[i] = sizeof(*b);
}

/* ---- matching ---------------------------------------------------------- */

/*
 * key->data = the first len bytes of str (a zero-padded TH_STR_SLOT slot)
 * reversed, for the str_postfix trie.  The whole slot is reversed 8 bytes at
 * a time (32 byte swaps, no per-byte loop), which leaves the reversed string
 * in its last len bytes.
 */
static __noinline void reverse_to_key(struct hook_scratch *s, const __u8 *str, __u32 len)
{
	const __u64 *src = (const __u64 *)str;
	__u64 *dst = (__u64 *)s->rev;

	for (int i = 0; i < TH_STR_SLOT / 8; i++)
		dst[TH_STR_SLOT / 8 - 1 - i] = __builtin_bswap64(src[i]);
	if (len > TH_STR_MAX)
		len = TH_STR_MAX;
	BARRIER_MASK(len, 255);
	bpf_probe_read_kernel(s->key.data, len, &s->rev[(TH_STR_SLOT - len) & 255]);
}

/* Is the string (TH_STR_SLOT bytes, zero padded, len used) in set set_id? */
static __always_inline bool str_in_set(struct hook_scratch *s, const __u8 *str, __u32 len,
				       __u8 op, __u32 set_id)
{
	struct th_str_key *key = &s->key;

	key->set_id = set_id;
	if (op == TH_MATCH_POSTFIX) {
		reverse_to_key(s, str, len);
		key->prefixlen = 32 + 8 * (len & (TH_STR_SLOT - 1));
		return bpf_map_lookup_elem(&str_postfix, key) != NULL;
	}
	bpf_probe_read_kernel(key->data, TH_STR_MAX, str);
	if (op == TH_MATCH_PREFIX) {
		key->prefixlen = 32 + 8 * (len & (TH_STR_SLOT - 1));
		return bpf_map_lookup_elem(&str_prefix, key) != NULL;
	}
	return bpf_map_lookup_elem(&str_equal, &key->set_id) != NULL;
}

static __always_inline bool int_matches(const struct th_arg_matcher *m, __s64 v)
{
	for (int j = 0; j < TH_MAX_INT_VALUES; j++) {
		if (j >= m->nvalues)
			break;
		__s64 want = m->values[j];

		if ((m->op == TH_MATCH_EQUAL && v == want) || (m->op == TH_MATCH_GT && v > want) ||
		    (m->op == TH_MATCH_LT && v < want) || (m->op == TH_MATCH_MASK && (v & want)))
			return true;
	}
	return false;
}

/* The current process and its ancestors along real_parent, at most
 * TH_PID_ANCESTORS of them, up to (not including) the idle task, pid 0.  A
 * walk of the live tree: a process reparented to init or a subreaper after
 * its parent exited no longer descends from it (Tetragon's followForks walk
 * of its execve_map loses exited parents the same way). */
static __noinline void collect_ancestors(struct hook_scratch *s)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	__u32 n = 0;

	for (int d = 0; d < TH_PID_ANCESTORS; d++) {
		struct task_struct *leader = BPF_CORE_READ(task, group_leader);
		__u32 tgid = BPF_CORE_READ(leader, tgid);

		if (d > 0 && tgid == 0)
			break;
		struct pid *p = BPF_CORE_READ(leader, thread_pid);
		unsigned int level = BPF_CORE_READ(p, level);

		s->anc_pid[d] = tgid;
		s->anc_nspid[d] = BPF_CORE_READ(p, numbers[level].nr);
		n = d + 1;
		task = BPF_CORE_READ(leader, real_parent);
		if (!task || task == leader)
			break;
	}
	s->nanc = n;
	s->anc_ktime = s->ev.hdr.ktime;
}

struct pid_walk_ctx {
	__u32 slot;                     /* the scratch slot of this run */
	__u32 sel;                      /* selector index */
	__u32 entry;                    /* matchPIDs entry */
	__u32 found;
};

/* One process of the collected ancestors against one matchPIDs entry: a
 * bpf_loop callback, so the verifier checks it once rather than simulating
 * every (ancestor, value) pair of a nested loop (that tripled load times). */
static long pid_walk_step(__u32 d, void *data)
{
	struct pid_walk_ctx *c = data;
	__u32 zero = 0, slot = c->slot, si = c->sel, k = c->entry;
	/* looked up again, as in select_step: map pointers do not survive the
	 * callback's context on older verifiers */
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &slot);

	if (!cfg || !s || d >= s->nanc)
		return 1;
	BARRIER_MASK(d, 31);            /* TH_PID_ANCESTORS - 1 */
	BARRIER_MASK(si, 7);
	BARRIER_MASK(k, 3);             /* TH_MAX_PID_MATCH - 1 */
	if (si >= TH_MAX_SELECTORS)
		return 1;
	const struct th_pid_matcher *m = &cfg->selectors[si].pids[k];
	__u32 pid = m->flags & TH_PID_NAMESPACE ? s->anc_nspid[d] : s->anc_pid[d];

	for (int j = 0; j < TH_MAX_PID_VALUES; j++) {
		if (j < m->nvalues && m->pids[j] == pid) {
			c->found = 1;
			return 1;
		}
	}
	return 0;
}

/* Every matchPIDs entry of the selector holds (they are ANDed, as in Tetragon). */
static __noinline bool pids_match(struct hook_scratch *s, const struct th_selector *sel, __u32 slot, __u32 index)
{
	for (int k = 0; k < TH_MAX_PID_MATCH; k++) {
		if (k >= sel->npids)
			break;
		const struct th_pid_matcher *m = &sel->pids[k];
		bool found = false;

		if (!m->flags) {            /* the common case: this process's pid */
			for (int j = 0; j < TH_MAX_PID_VALUES; j++)
				if (j < m->nvalues && m->pids[j] == s->ev.pid)
					found = true;
		} else {
			struct pid_walk_ctx c = { .slot = slot, .sel = index, .entry = k };

			if (s->anc_ktime != s->ev.hdr.ktime)
				collect_ancestors(s);
			bpf_loop(m->flags & TH_PID_FOLLOW_FORKS ? TH_PID_ANCESTORS : 1, pid_walk_step, &c, 0);
			found = c.found;
		}
		if (found == (bool)m->negate)
			return false;
	}
	return true;
}

static __always_inline __u64 caps_set(const struct th_caps *c, __u8 kind)
{
	return kind == 1 ? c->effective : kind == 2 ? c->permitted : c->inheritable;
}

/*
 * matchCapabilityChanges / matchNamespaceChanges (Tetragon's semantics):
 * compared with the process's capabilities and namespaces at its last exec
 * (its fork if it has not executed since; when tracking started for older
 * processes).  A process without state never matches.  On a match the
 * current values become the new baseline, so one change is reported once.
 */
static __noinline bool changes_match(struct hook_scratch *s, const struct th_selector *sel)
{
	__u32 tgid = s->ev.pid;
	struct th_proc_state *st = bpf_map_lookup_elem(&proc_state, &tgid);
	struct task_struct *task = (void *)bpf_get_current_task();
	struct th_caps caps;

	if (!st)
		return false;
	read_caps(BPF_CORE_READ(task, cred), &caps);
	if (sel->capch_kind) {
		__u64 now = caps_set(&caps, sel->capch_kind), then = caps_set(&st->caps, sel->capch_kind);
		bool match;

		if (sel->capch_userns && s->ev.ns[TH_NS_USER] == sel->capch_userns)
			return false;
		if ((now & sel->capch_mask) != (then & sel->capch_mask))
			match = !sel->capch_negate;     /* a listed capability changed */
		else if (now != then)
			match = sel->capch_negate;      /* only others changed */
		else
			match = false;
		if (!match)
			return false;
	}
	if (sel->nsch_mask) {
		bool changed = false;

		for (int i = 0; i < TH_NS_COUNT; i++)
			if ((sel->nsch_mask & (1 << i)) && st->ns[i] && st->ns[i] != s->ev.ns[i])
				changed = true;
		if (!changed)
			return false;
	}
	/* the selector's last check: it matches, so this is the new baseline */
	if (sel->capch_kind)
		st->caps = caps;
	if (sel->nsch_mask)
		__builtin_memcpy(st->ns, s->ev.ns, sizeof(st->ns));
	return true;
}

/* followChildren: this process or an ancestor executed a binary of the entry. */
static __always_inline bool follows_binary(__u32 tgid, __u8 bit)
{
	struct th_proc_state *st = bpf_map_lookup_elem(&proc_state, &tgid);

	return st && (st->follow_bits >> (bit & 63)) & 1;
}

struct select_ctx {
	int matched;                    /* index of the first selector that matched, or -1 */
	__u32 slot;                     /* the scratch slot this run claimed */
};

static __always_inline bool selector_matches(struct hook_scratch *s, struct th_hook_config *cfg,
					     struct th_selector *sel, __u32 slot, __u32 index)
{
	struct th_hook_event *ev = &s->ev;

	if (sel->npids && !pids_match(s, sel, slot, index))
		return false;
	for (int k = 0; k < TH_MAX_NS_MATCH; k++) {
		if (k >= sel->nns)
			break;
		struct th_ns_matcher *m = &sel->ns[k];
		__u32 inum = ev->ns[m->kind < TH_NS_COUNT ? m->kind : 0];
		bool found = false;

		for (int j = 0; j < TH_MAX_INT_VALUES; j++)
			if (j < m->nvalues && m->inums[j] == inum)
				found = true;
		if (found == (bool)m->negate)
			return false;
	}
	if (sel->caps_kind) {
		struct task_struct *task = (void *)bpf_get_current_task();
		struct th_caps caps;

		/* isNamespaceCapability: only tasks outside the host user namespace */
		if (sel->caps_userns && ev->ns[TH_NS_USER] == sel->caps_userns)
			return false;

		read_caps(BPF_CORE_READ(task, cred), &caps);
		__u64 have = sel->caps_kind == 1 ? caps.effective :
			     sel->caps_kind == 2 ? caps.permitted : caps.inheritable;
		if (((have & sel->caps_mask) != 0) == (bool)sel->caps_negate)
			return false;
	}
	if (sel->bin_op) {
		if (!s->binary_ready)
			resolve_binary(s);
		bool found = str_in_set(s, s->binary, s->binary_len, sel->bin_op, sel->bin_set_id);
		/* At exec hooks a task is between two binaries: either one counts. */
		__u8 t = cfg->exec_target_arg;

		if (!found && t < TH_MAX_ARGS)
			found = str_in_set(s, &ev->data[(t & 7) * TH_STR_SLOT & 2047], s->arg_str_len[t & 7],
					   sel->bin_op, sel->bin_set_id);
		if (!found && sel->bin_follow)
			found = follows_binary(ev->pid, sel->bin_follow - 1);
		if (found == (bool)sel->bin_negate)
			return false;
	}
	for (int k = 0; k < TH_MAX_MATCH_ARGS; k++) {
		if (k >= sel->nargs)
			break;
		struct th_arg_matcher *m = &sel->args[k];
		__u32 i = m->arg & 7;
		bool found;

		if (i >= TH_MAX_ARGS)
			return false;
		__u8 *slot = &ev->data[i * TH_STR_SLOT & 2047];

		if (arg_is_int(cfg->arg_kind[i]))
			found = int_matches(m, *(__s64 *)slot);
		else if (m->op >= TH_MATCH_SADDR && m->op <= TH_MATCH_STATE)
			found = net_matches(cfg, m, (struct th_sock_tuple *)slot);
		else
			found = str_in_set(s, slot, s->arg_str_len[i], m->op, m->set_id);
		if (found == (bool)m->negate)
			return false;
	}
	/* last: on a match it moves the process's baseline */
	if ((sel->capch_kind || sel->nsch_mask) && !changes_match(s, sel))
		return false;
	return true;
}

static long select_step(__u32 index, void *data)
{
	struct select_ctx *c = data;
	__u32 zero = 0;
	/* looked up again rather than passed in: older verifiers lose the
	 * type of map pointers spilled into the callback's context */
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	__u32 slot = c->slot;
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &slot);

	if (!cfg || !s || index >= cfg->nselectors)
		return 1;
	/* a bound the verifier sees on the register used for the address
	 * (the compiler would otherwise fold it into the check above) */
	asm volatile("%0 &= 7" : "+r"(index));
	if (index >= TH_MAX_SELECTORS)
		return 1;
	if (selector_matches(s, cfg, &cfg->selectors[index], slot, index)) {
		c->matched = index;
		return 1;
	}
	return 0;
}

/* ---- socket owners (TrackSock / UntrackSock) ---------------------------- */

static __always_inline struct th_sock_tuple *sock_slot(struct hook_scratch *s, __u32 i)
{
	return (struct th_sock_tuple *)&s->ev.data[(i & 7) * TH_STR_SLOT & 2047];
}

/* After a selector matched: name the owner of the event's socket (its first
 * sock/socket argument) when one is tracked, since the hook may run in
 * another task's context (softirq, a loopback sender); then do the
 * selector's TrackSock/UntrackSock.  Selectors saw the running task. */
static __noinline void socket_owner_actions(struct hook_scratch *s, struct th_hook_config *cfg,
					    struct th_selector *sel)
{
	for (int i = 0; i < TH_MAX_ARGS; i++) {
		__u8 kind = cfg->arg_kind[i];

		if (kind != TH_ARG_SOCK && kind != TH_ARG_SOCKET)
			continue;
		struct th_sock_owner *owner = sock_owner(sock_slot(s, i)->cookie);

		if (owner) {
			s->ev.pid = owner->pid;
			s->ev.tid = owner->tid;
			s->ev.flags |= TH_HOOK_SOCK_OWNER;
		}
		break;
	}
	if (sel->action == TH_ACTION_TRACK_SOCK && sel->action_arg < TH_MAX_ARGS)
		sock_track(sock_slot(s, sel->action_arg)->cookie);
	else if (sel->action == TH_ACTION_UNTRACK_SOCK && sel->action_arg < TH_MAX_ARGS)
		sock_untrack(sock_slot(s, sel->action_arg)->cookie);
}

/* ---- the common body of every entry program ----------------------------- */

/* args[n] with a constant index each: variable offsets into the stack are
 * rejected by older verifiers. */
static __always_inline __u64 pick_arg(__u64 *args, __u8 n)
{
	switch (n) {
	case 0: return args[0];
	case 1: return args[1];
	case 2: return args[2];
	case 3: return args[3];
	case 4: return args[4];
	}
	return 0;
}

/*
 * Read the arguments, evaluate the selectors, act.  Returns what an entry
 * program that can fail the call should return: 0 to let it proceed, or a
 * negative errno (Override's argError; -EPERM for Sigkill, so an exec being
 * killed also fails and the new program never runs).
 */
static __always_inline int run_hook(struct hook_scratch *s, struct th_hook_config *cfg,
				    __u64 *args, __u32 slot)
{
	if (cfg->flags & TH_CFG_SYSCALL_WRAPPER) {
		/* __x64_sys_*(const struct pt_regs *regs): the arguments are inside */
		struct pt_regs *regs = (struct pt_regs *)args[0];

		args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
		args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
		args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
		args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
		args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	}
	struct th_hook_event *ev = &s->ev;
	struct task_struct *task = (void *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	ev->hdr.op = TH_OP_HOOK;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->hook_id = cfg->hook_id;
	ev->flags = 0;
	s->binary_ready = 0;
	read_namespaces(task, BPF_CORE_READ(task, cred), ev->ns);
	for (int i = 0; i < TH_MAX_ARGS; i++) {
		ev->arg_len[i] = 0;
		if (i == cfg->ret_copy_arg)
			keep_buffer_pointer(s, i, pick_arg(args, cfg->arg_src[i]));
		else if (cfg->arg_kind[i])
			read_arg(s, i, cfg->arg_kind[i], pick_arg(args, cfg->arg_src[i]),
				 pick_arg(args, cfg->arg_offset[i]));
	}

	struct select_ctx c = { .matched = -1, .slot = slot };

	bpf_loop(TH_MAX_SELECTORS, select_step, &c, 0);
	if (c.matched < 0 || c.matched >= TH_MAX_SELECTORS)
		return 0;
	struct th_selector *sel = &cfg->selectors[c.matched];
	int verdict = 0;

	ev->selector = c.matched;
	ev->action = sel->action;
	ev->action_arg = sel->action_arg;
	if (cfg->monitor) {
		ev->flags |= TH_HOOK_MONITOR;
	} else if (sel->action == TH_ACTION_SIGKILL || sel->action == TH_ACTION_SIGNAL) {
		int sig = sel->action == TH_ACTION_SIGKILL ? SIGKILL : sel->action_arg;

		ev->action_arg = sig;
		if (bpf_send_signal(sig))
			ev->flags |= TH_HOOK_SIGNAL_FAILED;
		if (sel->action == TH_ACTION_SIGKILL)
			verdict = -EPERM;
	} else if (sel->action == TH_ACTION_OVERRIDE) {
		verdict = sel->action_arg;
	}
	socket_owner_actions(s, cfg, sel);
	if (sel->action == TH_ACTION_NOPOST || sel->no_post)
		return verdict;
	if (cfg->flags & TH_CFG_RETURN) {
		/* posted (or dropped by matchReturnArgs) when the function returns */
		if (bpf_map_update_elem(&pending, &id, ev, BPF_ANY))
			count_loss(TH_LOSS_HOOK);
		return verdict;
	}
	/* a rate limit thins the events, never the enforcement above */
	if (rate_allows(sel, c.matched, id, ev->hdr.ktime))
		submit(ev, sizeof(*ev), TH_LOSS_HOOK);
	return verdict;
}

static __always_inline int handle_hook(__u64 *args)
{
	__u32 zero = 0, slot = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);

	if (!cfg || !cfg->nselectors)
		return 0;
	struct hook_scratch *s = claim_scratch(bpf_get_current_pid_tgid() | 1, &slot);

	if (!s) {       /* more nested runs on this CPU than slots: counted, not silent */
		count_loss(TH_LOSS_HOOK_BUSY);
		return 0;
	}
	int verdict = run_hook(s, cfg, args, slot);

	s->owner = 0;
	return verdict;
}

/* The return value as the policy's returnArg type has it: a function
 * returning int leaves the upper half of the register undefined. */
static __always_inline __s64 normalise_return(const struct th_hook_config *cfg, __u64 raw)
{
	switch (cfg->ret_size) {
	case 1: return cfg->ret_signed ? (__s64)(__s8)raw : (__s64)(__u8)raw;
	case 2: return cfg->ret_signed ? (__s64)(__s16)raw : (__s64)(__u16)raw;
	case 4: return cfg->ret_signed ? (__s64)(__s32)raw : (__s64)(__u32)raw;
	}
	return raw;
}

/* Fill a returnCopy buffer kept by keep_buffer_pointer with the bytes the
 * call produced: its return value counts them (nothing on an error). */
static __always_inline void copy_to_buf(struct th_char_buf *b, __u8 kind, __s64 ret)
{
	void *ptr = (void *)*(__u64 *)b->data;
	__u32 n = ret > TH_BUF_MAX ? TH_BUF_MAX : ret > 0 ? (__u32)ret : 0;
	long err = 0;

	*(__u64 *)b->data = 0;
	BARRIER_MASK(n, 255);
	if (n && n <= TH_BUF_MAX)
		err = kind == TH_ARG_BUF_USER ? bpf_probe_read_user(b->data, n, ptr)
					      : bpf_probe_read_kernel(b->data, n, ptr);
	b->size = (ret > 0 ? (ret > TH_BUF_SIZE_MAX ? TH_BUF_SIZE_MAX : (__u32)ret) : 0) |
		  (err ? 1U << TH_BUF_FAULT_SHIFT : 0);
}

/* One case per position: a constant offset keeps the copy inside the map
 * value for the verifier (a computed one could reach past data[]). */
static __always_inline void copy_returned_buffer(struct th_hook_event *ev, struct th_hook_config *cfg, __s64 ret)
{
	__u8 pos = cfg->ret_copy_arg;
	__u8 kind = pos < TH_MAX_ARGS ? cfg->arg_kind[pos] : 0;

	if (ret > TH_BUF_MAX)
		ev->flags |= TH_HOOK_ARG_TRUNC;
	switch (pos) {
	case 0: copy_to_buf((struct th_char_buf *)&ev->data[0 * TH_STR_SLOT], kind, ret); break;
	case 1: copy_to_buf((struct th_char_buf *)&ev->data[1 * TH_STR_SLOT], kind, ret); break;
	case 2: copy_to_buf((struct th_char_buf *)&ev->data[2 * TH_STR_SLOT], kind, ret); break;
	case 3: copy_to_buf((struct th_char_buf *)&ev->data[3 * TH_STR_SLOT], kind, ret); break;
	case 4: copy_to_buf((struct th_char_buf *)&ev->data[4 * TH_STR_SLOT], kind, ret); break;
	}
}

/* The second half of a return probe: complete the event the entry parked for
 * this thread, check the matched selector's matchReturnArgs, post it. */
static __always_inline void handle_return(__u64 raw)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	__u64 id = bpf_get_current_pid_tgid();
	struct th_hook_event *ev;

	if (!cfg || !(cfg->flags & TH_CFG_RETURN))
		return;
	ev = bpf_map_lookup_elem(&pending, &id);
	if (!ev)
		return;
	/* Parked by an earlier thread with this id whose call never returned
	 * (exit, or the task died inside it): not this call's event. */
	struct task_struct *task = (void *)bpf_get_current_task();

	if (BPF_CORE_READ(task, start_boottime) > ev->hdr.ktime) {
		bpf_map_delete_elem(&pending, &id);
		return;
	}
	__u32 index = ev->selector;
	__s64 ret = normalise_return(cfg, raw);

	ev->retval = ret;
	ev->flags |= TH_HOOK_HAS_RETURN;
	if (cfg->ret_kind >= TH_ARG_SOCK && cfg->ret_kind <= TH_ARG_SOCKET) {
		struct th_sock_tuple *t = (struct th_sock_tuple *)&ev->data[TH_RET_SLOT * TH_STR_SLOT];

		net_read_arg(t, cfg->ret_kind, raw);
		ev->ret_len = sizeof(*t);
	}
	if (cfg->ret_action == TH_ACTION_TRACK_SOCK)
		sock_track(raw);
	else if (cfg->ret_action == TH_ACTION_UNTRACK_SOCK)
		sock_untrack(raw);
	if (cfg->ret_copy_arg < TH_MAX_ARGS)
		copy_returned_buffer(ev, cfg, ret);
	asm volatile("%0 &= 7" : "+r"(index));
	if (index < TH_MAX_SELECTORS) {
		struct th_arg_matcher *m = &cfg->ret_match[index];
		bool post = !m->op || int_matches(m, ret) != (bool)m->negate;

		if (post && rate_allows(&cfg->selectors[index], index, id, ev->hdr.ktime))
			submit(ev, sizeof(*ev), TH_LOSS_HOOK);
	}
	bpf_map_delete_elem(&pending, &id);
}

/* ---- entry programs: user space autoloads the one it attaches ------------ */

static __always_inline int kprobe_body(struct pt_regs *ctx)
{
	__u64 args[TH_MAX_ARGS] = {
		PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
		PT_REGS_PARM4(ctx), PT_REGS_PARM5(ctx),
	};

	return handle_hook(args);
}

SEC("kprobe")
int th_kprobe(struct pt_regs *ctx)
{
	kprobe_body(ctx);
	return 0;
}

SEC("kretprobe")
int th_kretprobe(struct pt_regs *ctx)
{
	handle_return(PT_REGS_RC(ctx));
	return 0;
}

/* Only loads where the kernel has bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE). */
SEC("kprobe")
int th_kprobe_override(struct pt_regs *ctx)
{
	int verdict = kprobe_body(ctx);

	if (verdict)
		bpf_override_return(ctx, verdict);
	return 0;
}

static __always_inline int trampoline_body(void *ctx)
{
	__u64 args[TH_MAX_ARGS] = {};

	for (int i = 0; i < TH_MAX_ARGS; i++)
		bpf_get_func_arg(ctx, i, &args[i]);   /* fails past the last argument: stays 0 */
	return handle_hook(args);
}

/* Targets are set by user space before load (bpf_program__set_attach_target). */
SEC("fentry/security_file_open")
int th_fentry(void *ctx)
{
	trampoline_body(ctx);
	return 0;
}

SEC("fexit/security_file_open")
int th_fexit(void *ctx)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	handle_return(ret);
	return 0;
}

SEC("fmod_ret/security_file_open")
int th_fmod_ret(void *ctx)
{
	return trampoline_body(ctx);
}

SEC("lsm/file_open")
int th_lsm(void *ctx)
{
	return trampoline_body(ctx);
}

/* Raw tracepoints: arguments are the TP_PROTO arguments.  Read through
 * bpf_probe_read_kernel: a direct ctx->args[4] would make the kernel refuse
 * to attach this program to a tracepoint with fewer arguments. */
SEC("raw_tp")
int th_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 args[TH_MAX_ARGS] = {};

	for (int i = 0; i < TH_MAX_ARGS; i++)
		bpf_probe_read_kernel(&args[i], sizeof(__u64), &ctx->args[i]);
	handle_hook(args);
	return 0;
}

/* Tracepoints: arguments are fields of the trace record at offsets user
 * space took from the event's format file. */
SEC("tracepoint")
int th_tracepoint(void *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	__u64 args[TH_MAX_ARGS] = {};
	__u64 base;

	if (!cfg)
		return 0;
	/* the record's address as a number: the verifier forbids arithmetic on
	 * the context pointer itself */
	bpf_probe_read_kernel(&base, sizeof(base), &ctx);
	for (int i = 0; i < TH_MAX_ARGS; i++) {
		__u8 field = cfg->arg_field[i];
		__u64 at = base + cfg->arg_offset[i];

		if (field & TH_FIELD_INLINE) {
			args[i] = at;
		} else if (field & TH_FIELD_DATALOC) {
			__u32 loc = 0;

			bpf_probe_read_kernel(&loc, sizeof(loc), (void *)at);
			args[i] = base + (loc & 0xffff);
		} else if (field) {
			bpf_probe_read_kernel(&args[i], field & 15, (void *)at);
		}
	}
	handle_hook(args);
	return 0;
}

/* Fallback for syscall hooks on kernels without kprobes: every syscall entry,
 * filtered at once by number. */
SEC("raw_tp/sys_enter")
int th_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 args[TH_MAX_ARGS];

	if (!cfg || (long)ctx->args[1] != cfg->syscall_nr)
		return 0;
	args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	handle_hook(args);
	return 0;
}

/* The sys_enter fallback's return half: the same syscall's exit. */
SEC("raw_tp/sys_exit")
int th_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	if (!cfg || BPF_CORE_READ(regs, orig_ax) != cfg->syscall_nr)
		return 0;
	handle_return(ctx->args[1]);
	return 0;
}

/* Fallback for exec hooks (security_bprm_check...) on kernels without
 * kprobes/LSM: the exec has succeeded but the new image has not run an
 * instruction yet, so a SIGKILL sent here stops it before it starts. */
SEC("raw_tp/sched_process_exec")
int th_exec(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 bprm = ctx->args[2];
	__u64 args[TH_MAX_ARGS] = { bprm, bprm, bprm, bprm, bprm };

	handle_hook(args);
	return 0;
}
