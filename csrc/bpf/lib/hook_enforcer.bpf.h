/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: the enforcer programs of spec.enforcers (the map of notes is
 * lib/enforcer.bpf.h, shared with the process sensor).
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_ENFORCER_BPF_H
#define TETRAHOST_HOOK_ENFORCER_BPF_H

/* This thread's NotifyEnforcer note for enforcer `enforcer_id`, taken out of
 * the map (a note is acted on once). */
static __always_inline bool take_note(__u32 enforcer_id, struct th_enforcer_note *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct th_enforcer_note *note = bpf_map_lookup_elem(&enforcer_notes, &id);

	if (!note || note->enforcer_id != enforcer_id)
		return false;
	*out = *note;
	bpf_map_delete_elem(&enforcer_notes, &id);
	return true;
}

/* The enforcer where the kernel can change a syscall's return: a kprobe on
 * each of its syscall functions with bpf_override_return (loads only where
 * the kernel has it). */
SEC("kprobe")
int th_enforcer_kprobe(struct pt_regs *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct th_enforcer_note note;

	if (!cfg || !(cfg->flags & TH_CFG_ENFORCER) || !take_note(cfg->enforcer_id, &note))
		return 0;
	if (note.sig)
		bpf_send_signal(note.sig);
	bpf_override_return(ctx, note.error);
	return 0;
}

/* The enforcer on kernels without that: at the exit of its syscalls (in the
 * dispatcher's chains), the signal.  The call has run and its return value
 * cannot be changed from here: a Sigkill stops the task before it sees it. */
SEC("raw_tp/sys_exit")
int th_enforcer_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 nr = BPF_CORE_READ(regs, orig_ax);
	struct th_enforcer_note note;

	if (!cfg)
		return 0;
	if ((cfg->flags & TH_CFG_ENFORCER) && in_syscall_set(cfg, nr) &&
	    take_note(cfg->enforcer_id, &note) && note.sig)
		bpf_send_signal(note.sig);
	dispatch_after(ctx, &sys_exit_chains, &sys_exit_progs, nr, cfg->dispatch_slot);
	return 0;
}

#endif
