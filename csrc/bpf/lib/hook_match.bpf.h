/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: evaluating selectors (matchArgs, matchBinaries, matchPIDs,
 * matchNamespaces, matchCapabilities and the change selectors).
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_MATCH_BPF_H
#define TETRAHOST_HOOK_MATCH_BPF_H

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

enum th_set_match { TH_SET_NO = 0, TH_SET_YES = 1, TH_SET_UNKNOWN = 2 };

/* The string at t (an argument's slot, or the binary at TH_TAIL_BINARY) in a
 * set: Postfix on a string longer than its slot compares the string's end.
 * A path whose root end is unknown cannot be compared from the root: the
 * caller makes the selector match (fails closed), so a policy acts on what
 * it cannot see rather than letting it through. */
static __always_inline enum th_set_match string_in_set(struct hook_scratch *s, __u32 t, const __u8 *str,
						       __u32 len, __u8 op, __u32 set_id)
{
	if (op == TH_MATCH_POSTFIX && s->has_tail[t & 7])
		return str_in_set(s, s->tail[t & 7], TH_STR_MAX, op, set_id);
	if (s->unresolved[t & 7])
		return TH_SET_UNKNOWN;
	return str_in_set(s, str, len, op, set_id);
}

/* A string operator's verdict on one value: found, adjusted for an unknown
 * value to whatever makes the selector match (its negation included). */
static __always_inline bool string_found(enum th_set_match m, __u8 negate)
{
	return m == TH_SET_UNKNOWN ? !negate : m == TH_SET_YES;
}

static __always_inline bool int_matches(const struct th_arg_matcher *m, __s64 v)
{
	if (m->op == TH_MATCH_IN_MAP) {         /* InMap: (set_id, v) in the hook's int_set */
		struct th_int_key key = { .set_id = m->set_id, .value = v };

		return bpf_map_lookup_elem(&int_set, &key) != NULL;
	}
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
TH_VERIFIED_ONCE int collect_ancestors(__u32 scratch)
{
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &scratch);
	struct task_struct *task = (void *)bpf_get_current_task();
	__u32 n = 0;

	if (!s)
		return 0;

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
	return 0;
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
				collect_ancestors(slot);
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
	return kind == TH_CAPS_EFFECTIVE ? c->effective : kind == TH_CAPS_PERMITTED ? c->permitted : c->inheritable;
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

/* Matcher k of selector sel (a network operator) against its argument's
 * tuple: see net_matches. */
TH_VERIFIED_ONCE int net_arg_matches(__u32 scratch, __u64 sel, __u64 k)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &scratch);

	/* 64-bit indexes: a u32 would be compared in one register and
	 * zero-extended into another for the address, which has no bound */
	if (!cfg || !s || sel >= TH_MAX_SELECTORS || k >= TH_MAX_MATCH_ARGS)
		return 0;
	const struct th_arg_matcher *m = &cfg->selectors[sel].args[k];

	return net_matches(cfg, m, (const struct th_sock_tuple *)arg_slot(s, m->arg));
}

/* Does integer matcher k of selector sel hold for its argument?  A global
 * function like net_arg_matches: inlined in the selector x argument loops,
 * InMap's map lookup tripled every hook program's verification (th_exec
 * 66k -> 226k processed instructions). */
TH_VERIFIED_ONCE int int_arg_matches(__u32 scratch, __u64 sel, __u64 k)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &scratch);

	if (!cfg || !s || sel >= TH_MAX_SELECTORS || k >= TH_MAX_MATCH_ARGS)
		return 0;
	const struct th_arg_matcher *m = &cfg->selectors[sel].args[k];

	return int_matches(m, *(__s64 *)arg_slot(s, m->arg));
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
		__u64 have = caps_set(&caps, sel->caps_kind);
		if (((have & sel->caps_mask) != 0) == (bool)sel->caps_negate)
			return false;
	}
	if (sel->bin_op) {      /* s->binary: resolved by run_hook (TH_CFG_NEEDS_BINARY) */
		/* binary_is_target: the caller's binary is the exec target's path
		 * (run_hook did not resolve it), compared just below */
		bool found = !s->binary_is_target &&
			     string_found(string_in_set(s, TH_TAIL_BINARY, s->binary, s->binary_len,
							sel->bin_op, sel->bin_set_id), sel->bin_negate);
		/* At exec hooks a task is between two binaries: either one counts. */
		__u8 t = cfg->exec_target_arg;

		if (!found && t < TH_MAX_ARGS)
			found = string_found(string_in_set(s, t, arg_slot(s, t), s->arg_str_len[t & 7],
							   sel->bin_op, sel->bin_set_id), sel->bin_negate);
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
		__u8 *at = arg_slot(s, i);

		if (arg_is_int(cfg->arg_kind[i]))
			found = int_arg_matches(slot, index, k);
		else if (m->op >= TH_MATCH_SADDR && m->op <= TH_MATCH_STATE)
			found = net_arg_matches(slot, index, k);
		else
			found = string_found(string_in_set(s, i, at, s->arg_str_len[i], m->op, m->set_id),
					     m->negate);
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
	/* A bound the verifier sees on the register used for the address (the
	 * compiler would otherwise fold it into the check above).  64 bits: a
	 * u32 is compared in one register and zero-extended into another,
	 * which 6.1's verifier does not tie to the first. */
	__u64 i = index;

	asm volatile("%0 &= 7" : "+r"(i));
	if (i >= TH_MAX_SELECTORS)
		return 1;
	if (selector_matches(s, cfg, &cfg->selectors[i], slot, i)) {
		c->matched = i;
		return 1;
	}
	return 0;
}

#endif
