/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * imaHash on BPF-LSM hooks.  IMA's helper (bpf_ima_file_hash) may sleep, so
 * only a sleepable program can call it, and a sleepable program may not use
 * the LPM tries and stack map the selectors need.  So the work is split:
 * th_lsm evaluates the selectors and, when the matching one asks imaHash,
 * parks the event here instead of posting it; the sleepable program of the
 * same hook (th_ima_bprm / th_ima_file) runs right after it, adds the hash
 * and posts the event.  The kernel runs the programs of one LSM hook
 * newest-attached first: user space attaches the sleepable one first.
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_IMA_BPF_H
#define TETRAHOST_HOOK_IMA_BPF_H

/* The thread and the hook's first argument (the linux_binprm or file): an
 * event parked by a run whose sleepable half never ran (a later program of
 * the hook denied the call first) matches no later call, and ages out. */
struct ima_key {
	__u64 pid_tgid;
	__u64 object;
};

/* LRU (preallocated): the only hash map kind sleepable programs may use on
 * every kernel with the helper.  One entry unless the hook asks imaHash
 * (user space sizes it before load). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct ima_key);
	__type(value, struct th_hook_event);
} ima_parked SEC(".maps");

/* th_lsm: park the matched event for the sleepable half.  false when the map
 * refused it (the caller then posts it without a hash). */
static __always_inline bool ima_park(struct th_hook_event *ev, __u64 pid_tgid, __u64 object)
{
	struct ima_key key = { .pid_tgid = pid_tgid, .object = object };

	return bpf_map_update_elem(&ima_parked, &key, ev, BPF_ANY) == 0;
}

/* The sleepable half: the event this thread's th_lsm parked for this call,
 * with the hash of `file` added, posted.  It returns 0: it runs only when
 * every program before it allowed the call (a verdict stops the chain). */
static __always_inline long ima_post(__u64 object, struct file *file)
{
	struct ima_key key = { .pid_tgid = bpf_get_current_pid_tgid(), .object = object };
	struct th_hook_event *ev = bpf_map_lookup_elem(&ima_parked, &key);
	long algo;

	if (!ev)
		return 0;
	algo = bpf_ima_file_hash(file, ev->ima_digest, sizeof(ev->ima_digest));
	ev->ima_algo = algo < 0 ? -1 : algo;
	submit_hook(ev);
	bpf_map_delete_elem(&ima_parked, &key);
	return 0;
}

/* Hooks whose first argument is the linux_binprm: the hash of the file
 * being executed.  The target is set by user space before load. */
SEC("lsm.s/bprm_check_security")
long BPF_PROG(th_ima_bprm, struct linux_binprm *bprm)
{
	return ima_post((__u64)bprm, bprm->file);
}

/* Hooks whose first argument is the file (file_open...). */
SEC("lsm.s/file_open")
long BPF_PROG(th_ima_file, struct file *file)
{
	return ima_post((__u64)file, file);
}

#endif
