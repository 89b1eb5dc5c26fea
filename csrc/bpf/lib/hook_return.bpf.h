/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: the return half of `return: true` hooks (kretprobe, fexit,
 * sys_exit): complete the parked event, check matchReturnArgs, post.
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_RETURN_BPF_H
#define TETRAHOST_HOOK_RETURN_BPF_H

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
static __always_inline void copy_to_buf(struct th_hook_event *ev, struct th_char_buf *b, __u8 kind, __s64 ret)
{
	__u64 ptr = *(__u64 *)b->data;

	*(__u64 *)b->data = 0;
	fill_char_buf(b, kind, ptr, ret > 0 ? ret : 0, &ev->flags);
}

/* One case per position: a constant offset keeps the copy inside the map
 * value for the verifier (a computed one could reach past data[]). */
static __always_inline void copy_returned_buffer(struct th_hook_event *ev, struct th_hook_config *cfg, __s64 ret)
{
	__u8 pos = cfg->ret_copy_arg;
	__u8 kind = pos < TH_MAX_ARGS ? cfg->arg_kind[pos] : 0;

	switch (pos) {
	case 0: copy_to_buf(ev, (struct th_char_buf *)&ev->data[0 * TH_STR_SLOT], kind, ret); break;
	case 1: copy_to_buf(ev, (struct th_char_buf *)&ev->data[1 * TH_STR_SLOT], kind, ret); break;
	case 2: copy_to_buf(ev, (struct th_char_buf *)&ev->data[2 * TH_STR_SLOT], kind, ret); break;
	case 3: copy_to_buf(ev, (struct th_char_buf *)&ev->data[3 * TH_STR_SLOT], kind, ret); break;
	case 4: copy_to_buf(ev, (struct th_char_buf *)&ev->data[4 * TH_STR_SLOT], kind, ret); break;
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
			submit_hook(ev);
	}
	bpf_map_delete_elem(&pending, &id);
}

#endif
