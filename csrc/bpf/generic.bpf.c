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
#include "lib/enforcer.bpf.h"
#include "lib/net.bpf.h"
#include "lib/procstate.bpf.h"
#include "lib/dispatch.bpf.h"
#include "lib/lsm_ret.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGKILL 9

/* the rest of the program, in the order each part needs the previous ones */
#include "lib/hook_state.bpf.h"
#include "lib/kobj_args.bpf.h"
#include "lib/hook_args.bpf.h"
#include "lib/hook_match.bpf.h"
#include "lib/hook_return.bpf.h"
#include "lib/hook_syscall.bpf.h"
#include "lib/hook_ima.bpf.h"

/* ---- socket owners (TrackSock / UntrackSock) ---------------------------- */

static __always_inline struct th_sock_tuple *sock_slot(struct hook_scratch *s, __u32 i)
{
	return (struct th_sock_tuple *)arg_slot(s, i);
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

/* NotifyEnforcer: the note for this thread (id: pid_tgid) that the policy's
 * enforcer acts on.  A function of its own so that its record is not on
 * every entry program's stack (Debian 6.1's verifier allows 512 bytes for
 * the deepest call chain, entry program's frame included).  0 if noted. */
TH_VERIFIED_ONCE int note_enforcer(__u64 id, __u32 enforcer_id, __u32 hook_id, __s32 error, __s32 sig)
{
	struct th_enforcer_note note = {
		.enforcer_id = enforcer_id, .hook_id = hook_id, .error = error, .sig = sig,
	};

	return bpf_map_update_elem(&enforcer_notes, &id, &note, BPF_ANY) ? 1 : 0;
}

/* Set (USDT): write the selector's value into the user memory of argument
 * action_arg, as many bytes as the argument has.  Only th_usdt_set gets
 * here (set_addr is NULL for every other program, so the helper, refused
 * under lockdown, is in no other program).  0 if written. */
static __always_inline int usdt_set(struct th_hook_config *cfg, struct th_selector *sel, __u64 *set_addr)
{
	__u32 i = sel->action_arg;
	__u64 addr;
	__s64 v = sel->set_value;

	if (i >= TH_MAX_ARGS)
		return -1;
	addr = pick_arg(set_addr, i);
	if (!addr)              /* a register or a constant: not in memory */
		return -1;
	switch (cfg->usdt_args[i].size) {
	case 1: return bpf_probe_write_user((void *)addr, &v, 1);
	case 2: return bpf_probe_write_user((void *)addr, &v, 2);
	case 4: return bpf_probe_write_user((void *)addr, &v, 4);
	case 8: return bpf_probe_write_user((void *)addr, &v, 8);
	}
	return -1;
}

/* The calling task's namespaces into its event; zeros for a task that has
 * dropped them (exiting), not a previous event's values left in the scratch. */
static __always_inline void event_namespaces(struct task_struct *task, struct th_hook_event *ev)
{
	__builtin_memset(ev->ns, 0, sizeof(ev->ns));
	read_namespaces(task, BPF_CORE_READ(task, cred), ev->ns);
}

/*
 * Read the arguments, evaluate the selectors, act.  Returns what an entry
 * program that can fail the call should return: 0 to let it proceed, or a
 * negative errno (Override's argError; -EPERM for Sigkill, so an exec being
 * killed also fails and the new program never runs).  set_addr: th_usdt_set's
 * user addresses of the USDT arguments in memory (0 for others), else NULL.
 */
static __always_inline int run_hook(void *ctx, struct hook_scratch *s, struct th_hook_config *cfg,
				    __u64 *args, long syscall_nr, __u32 slot, __u64 *set_addr, bool after_exec)
{
	if (cfg->flags & TH_CFG_SYSCALL_WRAPPER) {
		/* __x64_sys_*(const struct pt_regs *regs): the arguments are inside,
		 * and which syscall this is (one program serves a whole list) */
		struct pt_regs *regs = (struct pt_regs *)args[0];

		syscall_nr = BPF_CORE_READ(regs, orig_ax);
		syscall_args(regs, args);
	}
	struct th_hook_event *ev = &s->ev;
	struct task_struct *task = (void *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	ev->hdr.op = TH_OP_HOOK;
	ev->hdr.size = sizeof(*ev);       /* submit_hook cuts it to what is used */
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->hook_id = cfg->hook_id;
	ev->syscall_nr = syscall_nr;
	ev->flags = in_ia32_syscall() ? TH_HOOK_COMPAT : 0;
	ev->ima_algo = -1;
	ev->ret_len = 0;                  /* the scratch is reused: no stale return slot */
	/* The caller's binary for matchBinaries, here rather than where a
	 * selector first needs it: called from select_step, its path walk made
	 * the deepest call chain (th_tracepoint -> select_step -> resolve_binary
	 * -> walk_step) 544 bytes of stack, over the 512 Debian 6.1's verifier
	 * allows.  A selector reaches matchBinaries on nearly every event anyway
	 * (only matchPIDs/Namespaces/Capabilities come before it). */
	/* After the exec (th_exec at sched_process_exec) the caller's binary IS
	 * the executed one, which the exec target argument resolves anyway:
	 * matchBinaries then compares that one path instead of walking it twice
	 * (a constant here, folded away in every other program). */
	s->binary_is_target = after_exec && cfg->exec_target_arg < TH_MAX_ARGS;
	if ((cfg->flags & TH_CFG_NEEDS_BINARY) && !s->binary_is_target)
		resolve_binary(slot);
	/* ~25 kernel reads: before the selectors only where one of them compares
	 * namespaces; otherwise an event that matched reads them (most calls
	 * of a hooked function match no selector) */
	bool ns_first = cfg->flags & TH_CFG_NEEDS_NS;

	if (ns_first)
		event_namespaces(task, ev);
	for (int i = 0; i < TH_MAX_ARGS; i++) {
		ev->arg_len[i] = 0;
		if (i == cfg->ret_copy_arg)
			keep_buffer_pointer(s, i, pick_arg(args, cfg->arg_src[i]));
		else if (cfg->arg_kind[i] &&
			 read_arg(slot, i, cfg->arg_kind[i],
				  cfg->resolve[i].active ? resolve_arg(i, pick_arg(args, cfg->arg_src[i]))
							 : pick_arg(args, cfg->arg_src[i]),
				  pick_arg(args, cfg->arg_offset[i])) == TH_READ_ARG_BACKING_FILE)
			return 0;       /* the caller's own open was this hook's event */
	}

	struct select_ctx c = { .matched = -1, .slot = slot };

	bpf_loop(TH_MAX_SELECTORS, select_step, &c, 0);
	if (c.matched < 0 || c.matched >= TH_MAX_SELECTORS)
		return 0;
	struct th_selector *sel = &cfg->selectors[c.matched];
	int verdict = 0;

	if (!ns_first)
		event_namespaces(task, ev);

	ev->selector = c.matched;
	ev->action = sel->action;
	ev->action_arg = sel->action_arg;
	/* stacks are taken here, in the program's own context (the helper needs
	 * it); REUSE: a new stack whose hash collides replaces the old one */
	ev->kernel_stack_id = sel->stack_traces & TH_STACK_KERNEL ?
			      bpf_get_stackid(ctx, &stack_traces, BPF_F_REUSE_STACKID) : -1;
	ev->user_stack_id = sel->stack_traces & TH_STACK_USER ?
			    bpf_get_stackid(ctx, &stack_traces, BPF_F_USER_STACK | BPF_F_REUSE_STACKID) : -1;
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
	} else if (set_addr && sel->action == TH_ACTION_SET) {
		if (usdt_set(cfg, sel, set_addr))
			ev->flags |= TH_HOOK_SET_FAILED;
	} else if (sel->action == TH_ACTION_NOTIFY_ENFORCER) {
		if (note_enforcer(id, cfg->enforcer_id, cfg->hook_id, sel->notify_error, sel->action_arg))
			ev->flags |= TH_HOOK_SIGNAL_FAILED;
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
	if (!rate_allows(sel, c.matched, id, ev->hdr.ktime))
		return verdict;
	/* imaHash: the hook's sleepable program adds the hash and posts it; it
	 * runs only if the call goes on, so a denied call's event goes now */
	if ((cfg->flags & TH_CFG_IMA_HASH) && sel->ima_hash && !verdict && ima_park(ev, id, args[0]))
		return verdict;
	submit_hook(ev);
	return verdict;
}

/* syscall_nr: the syscall being entered where the caller knows it (sys_enter),
 * else -1 (run_hook reads it from a syscall wrapper's pt_regs). */
static __always_inline int handle_hook_set(void *ctx, __u64 *args, long syscall_nr, __u64 *set_addr,
					   bool after_exec)
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
	int verdict = run_hook(ctx, s, cfg, args, syscall_nr, slot, set_addr, after_exec);

	s->owner = 0;
	return verdict;
}

static __always_inline int handle_hook(void *ctx, __u64 *args, long syscall_nr)
{
	return handle_hook_set(ctx, args, syscall_nr, NULL, false);
}

/* ---- entry programs: user space autoloads the one it attaches ------------ */

static __always_inline int kprobe_body(struct pt_regs *ctx)
{
	__u64 args[TH_MAX_ARGS] = {
		PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
		PT_REGS_PARM4(ctx), PT_REGS_PARM5(ctx),
	};

	return handle_hook(ctx, args, -1);
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

/* Functions of user-space programs (spec.uprobes): the registers of a user
 * call, read as a kprobe's; pointers among them are the caller's memory, so
 * user space gives string/char_buf arguments the *_USER kinds.  A Sigkill
 * is the signal alone: the call itself cannot be failed from here. */
SEC("uprobe")
int th_uprobe(struct pt_regs *ctx)
{
	kprobe_body(ctx);
	return 0;
}

/* USDT probe points (spec.usdts): a uprobe at the point's address; its
 * arguments are wherever the compiler left them (th_hook_config.usdt_args,
 * from the binary's note): a register, a constant, or memory at a register
 * plus a displacement.  Pointers among them are the program's memory. */
static __noinline __u64 usdt_reg(struct pt_regs *ctx, __u16 off)
{
	__u64 v = 0;

	if (off <= sizeof(struct pt_regs) - sizeof(__u64))
		bpf_probe_read_kernel(&v, sizeof(v), (void *)ctx + off);
	return v;
}

static __always_inline __u64 usdt_extend(__u64 v, struct th_usdt_arg *a)
{
	int shift = a->size >= 8 || a->size == 0 ? 0 : 64 - 8 * a->size;

	if (!shift)
		return v;
	v <<= shift;
	return a->is_signed ? (__u64)((__s64)v >> shift) : v >> shift;
}

/* The value of argument i; *addr: its user address when it is in memory. */
static __always_inline __u64 usdt_arg(struct pt_regs *ctx, struct th_usdt_arg *a, __u64 *addr)
{
	__u64 v = 0;
	__u32 n = a->size;

	*addr = 0;
	if (n > sizeof(v))
		n = sizeof(v);
	switch (a->loc) {
	case TH_USDT_CONST:
		return a->value;
	case TH_USDT_REG:
		return usdt_extend(usdt_reg(ctx, a->reg_off), a);
	case TH_USDT_MEM:
		*addr = usdt_reg(ctx, a->reg_off) + a->value;
		bpf_probe_read_user(&v, n, (void *)*addr);
		return usdt_extend(v, a);
	}
	return 0;
}

static __always_inline int usdt_body(struct pt_regs *ctx, bool may_set)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	__u64 args[TH_MAX_ARGS] = {}, addr[TH_MAX_ARGS] = {};

	if (!cfg)
		return 0;
	for (int i = 0; i < TH_MAX_ARGS; i++)
		args[i] = usdt_arg(ctx, &cfg->usdt_args[i], &addr[i]);
	return handle_hook_set(ctx, args, -1, may_set ? addr : NULL, false);
}

SEC("uprobe")
int th_usdt(struct pt_regs *ctx)
{
	usdt_body(ctx, false);
	return 0;
}

/* The same with the Set action: only policies that write arguments load it,
 * because bpf_probe_write_user is refused under lockdown and taints the log. */
SEC("uprobe")
int th_usdt_set(struct pt_regs *ctx)
{
	usdt_body(ctx, true);
	return 0;
}

static __always_inline int trampoline_body(void *ctx)
{
	__u64 args[TH_MAX_ARGS] = {};

	for (int i = 0; i < TH_MAX_ARGS; i++)
		bpf_get_func_arg(ctx, i, &args[i]);   /* fails past the last argument: stays 0 */
	return handle_hook(ctx, args, -1);
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
long th_fmod_ret(void *ctx)
{
	return lsm_ret(trampoline_body(ctx));
}

SEC("lsm/file_open")
long th_lsm(void *ctx)
{
	return lsm_ret(trampoline_body(ctx));
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
	handle_hook(ctx, args, -1);
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
			/* read into args[i] itself: a __u32 of its own on this
			 * frame put the 6.1 stack cap (see note_enforcer) over */
			args[i] = 0;
			bpf_probe_read_kernel(&args[i], sizeof(__u32), (void *)at);
			args[i] = base + (args[i] & 0xffff);
		} else if (field) {
			bpf_probe_read_kernel(&args[i], field & 15, (void *)at);
		}
	}
	handle_hook(ctx, args, -1);
	return 0;
}

/* Fallback for syscall hooks on kernels without kprobes: tail-called by the
 * syscall dispatcher (dispatch.bpf.c) for the syscalls of the hook's set (one
 * syscall, or a list); when done, the next hook on the same syscall. */
SEC("raw_tp/sys_enter")
int th_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 nr = ctx->args[1];
	__u64 args[TH_MAX_ARGS];

	if (!cfg)
		return 0;
	if (in_syscall_set(cfg, nr)) {
		syscall_args(regs, args);
		handle_hook(ctx, args, nr);
	}
	dispatch_after(ctx, &sys_enter_chains, &sys_enter_progs, nr, cfg->dispatch_slot);
	return 0;
}

/* The sys_enter fallback's return half: the same syscalls' exit. */
SEC("raw_tp/sys_exit")
int th_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 nr = BPF_CORE_READ(regs, orig_ax);

	if (!cfg)
		return 0;
	if (in_syscall_set(cfg, nr))
		handle_return(ctx->args[1]);
	dispatch_after(ctx, &sys_exit_chains, &sys_exit_progs, nr, cfg->dispatch_slot);
	return 0;
}

/* Fallback for file-open hooks (security_file_open, lsm file_open) on
 * kernels without kprobes, fentry or BPF-LSM: the completed open, at the exit
 * of the open family (the hook's syscall set), the returned descriptor
 * resolved to its file in the kernel, so a relative path or a symlink
 * matches by the file's real path.  The open has happened: Sigkill stops the
 * process before its next instruction, Override is not possible here. */
SEC("raw_tp/sys_exit")
int th_open_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u64 nr = BPF_CORE_READ(regs, orig_ax);
	long fd = ctx->args[1];

	if (!cfg)
		return 0;
	if (fd >= 0 && in_syscall_set(cfg, nr)) {
		__u64 file = (__u64)fd_to_file(fd);
		__u64 args[TH_MAX_ARGS] = { file, file, file, file, file };

		if (file)
			handle_hook(ctx, args, -1);
	}
	dispatch_after(ctx, &sys_exit_chains, &sys_exit_progs, nr, cfg->dispatch_slot);
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

	handle_hook_set(ctx, args, -1, NULL, true);
	return 0;
}

/* spec.enforcers: its programs, which need the dispatcher walk above */
#include "lib/hook_enforcer.bpf.h"
