// SPDX-License-Identifier: GPL-2.0-only
/*
 * Process sensor: exec, fork and exit of every process, from the sched
 * raw tracepoints, which exist on every kernel we target (no kprobes needed).
 * raw_tp rather than tp: the kernel then skips formatting the trace entry.
 */
#include "lib/common.bpf.h"
#include "lib/path.bpf.h"
#include "lib/task.bpf.h"
#include "lib/socktrack.bpf.h"
#include "lib/enforcer.bpf.h"
#include "lib/procstate.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* proc_feature[0]: what the loaded policies need (user space sets it):
 * PROC_TRACK keeps proc_state (exec-time caps/namespaces, followChildren
 * bits), PROC_FOLLOW also looks executed binaries up in follow_bins.  0 (no
 * such policy): exec/fork/exit do not pay for any of it. */
enum { PROC_TRACK = 1, PROC_FOLLOW = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} proc_feature SEC(".maps");

/* User space's own (struct th_delivered in csrc/events.h): pinned with the
 * ring buffer, mmapped by the agent, never read or written here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TH_DELIVERED_SLOTS);
	__type(key, __u32);
	__type(value, struct th_delivered);
} delivered SEC(".maps");

/* matchBinaries followChildren: an executable's path (its first TH_STR_MAX
 * bytes, zero padded) -> the bits of the followChildren entries it matches
 * (In: exact paths, as Tetragon's tg_mbset_map). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(key_size, TH_STR_MAX);
	__uint(value_size, sizeof(__u64));
} follow_bins SEC(".maps");

static __always_inline __u32 proc_features(void)
{
	__u32 zero = 0, *f = bpf_map_lookup_elem(&proc_feature, &zero);

	return f ? *f : 0;
}

/* Building an exec record needs more than the 512-byte BPF stack. */
struct exec_scratch {
	struct th_exec ev;
	struct path_scratch path;
	__u8 bin_key[TH_STR_MAX];      /* follow_bins key: the path, zero padded */
	struct th_proc_state fresh;    /* a new proc_state entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} exec_heap SEC(".maps");

/* The state of process tgid: created (zeroed) when missing, NULL if full. */
static __always_inline struct th_proc_state *proc_state_of(__u32 tgid, struct th_proc_state *fresh)
{
	struct th_proc_state *st = bpf_map_lookup_elem(&proc_state, &tgid);

	if (st)
		return st;
	__builtin_memset(fresh, 0, sizeof(*fresh));
	bpf_map_update_elem(&proc_state, &tgid, fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&proc_state, &tgid);
}

/* After an exec: its creds and namespaces are the new baseline of the
 * *Changes selectors; its binary may add followChildren bits (kept from the
 * ancestors: followChildren follows execs too, as Tetragon's mb_bitset). */
static __noinline void track_exec(struct exec_scratch *s, __u32 tgid, __u32 features)
{
	struct th_exec *ev = &s->ev;
	struct th_proc_state *st = proc_state_of(tgid, &s->fresh);

	if (!st)
		return;
	st->caps = ev->caps;
	__builtin_memcpy(st->ns, ev->ns, sizeof(st->ns));
	if (!(features & PROC_FOLLOW))
		return;
	__u32 len = ev->path_len;

	if (len > TH_STR_MAX)
		len = TH_STR_MAX;
	__builtin_memset(s->bin_key, 0, TH_STR_MAX);
	bpf_probe_read_kernel(s->bin_key, len & 255, ev->data);
	__u64 *bits = bpf_map_lookup_elem(&follow_bins, s->bin_key);

	if (bits)
		__sync_fetch_and_or(&st->follow_bits, *bits);
}

/* A new process: baseline = its creds and namespaces now; followChildren
 * bits inherited from the parent. */
static __noinline void track_fork(struct task_struct *child, __u32 tgid, __u32 ppid)
{
	struct th_proc_state st = {};
	struct th_proc_state *parent = bpf_map_lookup_elem(&proc_state, &ppid);
	const struct cred *cred = BPF_CORE_READ(child, cred);

	if (parent)
		st.follow_bits = parent->follow_bits;
	read_caps(cred, &st.caps);
	read_namespaces(child, cred, st.ns);
	bpf_map_update_elem(&proc_state, &tgid, &st, BPF_ANY);
}

/* Copy a walked path to dst, return its length.  A path longer than the
 * buffer keeps its root end (what Prefix policies compare). */
static __always_inline __u32 put_path(__u8 *dst, struct path_scratch *s, const struct path *p,
				      __u32 *flags, __u32 trunc_flag, __u32 unresolved_flag)
{
	__u32 how;
	__u32 pos = walk_path(s, p, &how, NULL, NULL);
	__u32 len = TH_PATH_MAX - pos;

	if (how)
		*flags |= trunc_flag;
	if (how & TH_WALK_UNRESOLVED)
		*flags |= unresolved_flag;
	if (len > TH_PATH_MAX)      /* cannot happen; tells the verifier the bound */
		return 0;
	bpf_probe_read_kernel(dst, len, &s->buf[pos & (TH_PATH_MAX - 1)]);
	return len;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct exec_scratch *s = bpf_map_lookup_elem(&exec_heap, &zero);

	if (!s)
		return 0;
	struct th_exec *ev = &s->ev;
	const struct cred *cred = BPF_CORE_READ(task, cred);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	__u64 id = bpf_get_current_pid_tgid();

	ev->hdr.op = TH_OP_EXEC;
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->ppid = BPF_CORE_READ(parent, tgid);
	ev->parent_ktime = process_start(parent);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->flags = 0;
	if (bpf_core_field_exists(task->loginuid)) {
		ev->auid = BPF_CORE_READ(task, loginuid.val);
	} else {
		ev->auid = (__u32)-1;
		ev->flags |= TH_EXEC_NO_AUID;
	}
	read_creds(cred, &ev->creds);
	read_caps(cred, &ev->caps);
	__builtin_memset(ev->ns, 0, sizeof(ev->ns));
	read_namespaces(task, cred, ev->ns);

	/* The file really executed (after symlinks, relative to no cwd): what
	 * policies match on, not the string the caller passed. */
	struct file *file = BPF_CORE_READ(bprm, file);
	__u32 path_len = put_path(ev->data, &s->path, __builtin_preserve_access_index(&file->f_path),
				  &ev->flags, TH_EXEC_TRUNC_PATH, TH_EXEC_PATH_UNRESOLVED);

	/* argv lives in the new image's stack, between arg_start and arg_end. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 args_len = arg_end - arg_start;

	if (args_len > TH_ARGS_MAX) {
		args_len = TH_ARGS_MAX;
		ev->flags |= TH_EXEC_TRUNC_ARGS;
	}
	path_len &= (2 * TH_PATH_MAX - 1);
	if (bpf_probe_read_user(&ev->data[path_len], args_len, (void *)arg_start)) {
		args_len = 0;
		ev->flags |= TH_EXEC_ERR_ARGS;
	}

	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 off = (path_len + args_len) & (2 * TH_PATH_MAX - 1);
	__u32 cwd_len = put_path(&ev->data[off], &s->path, __builtin_preserve_access_index(&fs->pwd),
				 &ev->flags, TH_EXEC_TRUNC_CWD, 0);

	ev->path_len = path_len;
	ev->args_len = args_len;
	ev->cwd_len = cwd_len;
	__u64 size = __builtin_offsetof(struct th_exec, data) + off + cwd_len;

	if (size > sizeof(*ev))
		return 0;
	ev->hdr.size = size;
	submit(ev, size, TH_LOSS_EXEC);

	__u32 features = proc_features();

	if (features & PROC_TRACK)
		track_exec(s, ev->pid, features);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	struct th_fork ev = {};

	ev.tid = BPF_CORE_READ(child, pid);
	ev.pid = BPF_CORE_READ(child, tgid);
	if (ev.tid != ev.pid)       /* a new thread, not a new process */
		return 0;
	ev.hdr.op = TH_OP_FORK;
	ev.hdr.size = sizeof(ev);
	ev.hdr.ktime = BPF_CORE_READ(child, start_boottime);
	ev.ppid = BPF_CORE_READ(parent, tgid);
	ev.parent_ktime = process_start(parent);
	submit(&ev, sizeof(ev), TH_LOSS_FORK);
	if (proc_features() & PROC_TRACK)
		track_fork(child, ev.pid, ev.ppid);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	struct th_exit ev = {};

	/* Fires for every thread; the process is gone when the last one leaves. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	ev.hdr.op = TH_OP_EXIT;
	ev.hdr.size = sizeof(ev);
	ev.hdr.ktime = bpf_ktime_get_boot_ns();
	ev.pid = BPF_CORE_READ(task, tgid);
	ev.tid = BPF_CORE_READ(task, pid);
	ev.exit_code = BPF_CORE_READ(task, exit_code);
	ev.start_ktime = process_start(task);
	submit(&ev, sizeof(ev), TH_LOSS_EXIT);
	if (proc_features() & PROC_TRACK)
		bpf_map_delete_elem(&proc_state, &ev.pid);
	return 0;
}
