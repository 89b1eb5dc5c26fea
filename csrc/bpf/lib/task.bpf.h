/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Reading a task's identity (creds, capabilities, namespaces) with CO-RE, so
 * one object works on every kernel from 6.1 on. */
#ifndef TH_TASK_BPF_H
#define TH_TASK_BPF_H

#include "common.bpf.h"

/* time namespaces exist only with CONFIG_TIME_NS */
struct nsproxy___timens {
	struct time_namespace *time_ns;
	struct time_namespace *time_ns_for_children;
} __attribute__((preserve_access_index));

/* x86's TS_COMPAT (thread_info.status): set on entry of a 32-bit syscall
 * (int 0x80, sysenter/syscall from compat mode), cleared on the return to
 * user space: in_ia32_syscall() of the kernel. */
#define TH_TS_COMPAT 0x0002

static __always_inline bool in_ia32_syscall(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	return BPF_CORE_READ(task, thread_info.status) & TH_TS_COMPAT;
}

static __always_inline void read_creds(const struct cred *cred, struct th_creds *out)
{
	out->uid = BPF_CORE_READ(cred, uid.val);
	out->gid = BPF_CORE_READ(cred, gid.val);
	out->euid = BPF_CORE_READ(cred, euid.val);
	out->egid = BPF_CORE_READ(cred, egid.val);
	out->suid = BPF_CORE_READ(cred, suid.val);
	out->sgid = BPF_CORE_READ(cred, sgid.val);
	out->fsuid = BPF_CORE_READ(cred, fsuid.val);
	out->fsgid = BPF_CORE_READ(cred, fsgid.val);
}

/* kernel_cap_t is u32[2] before 6.3 and one u64 after: 8 bytes either way,
 * little endian, so reading 8 bytes gives the same bit mask. */
static __always_inline void read_caps(const struct cred *cred, struct th_caps *out)
{
	bpf_probe_read_kernel(&out->effective, 8, __builtin_preserve_access_index(&cred->cap_effective));
	bpf_probe_read_kernel(&out->permitted, 8, __builtin_preserve_access_index(&cred->cap_permitted));
	bpf_probe_read_kernel(&out->inheritable, 8, __builtin_preserve_access_index(&cred->cap_inheritable));
}

static __always_inline void read_user_ns(struct th_user_ns *out, const struct user_namespace *ns)
{
	if (!ns)
		return;
	out->level = BPF_CORE_READ(ns, level);
	out->uid = BPF_CORE_READ(ns, owner.val);
	out->gid = BPF_CORE_READ(ns, group.val);
	out->inum = BPF_CORE_READ(ns, ns.inum);
}

/* A struct cred as a policy argument: ids, securebits, capabilities, and the
 * user namespace they are relative to. */
static __always_inline void read_cred_arg(struct th_cred *out, const struct cred *cred)
{
	if (!cred) {
		out->flags = TH_CRED_READ_FAILED;
		return;
	}
	read_creds(cred, &out->ids);
	out->securebits = BPF_CORE_READ(cred, securebits);
	read_caps(cred, &out->caps);
	read_user_ns(&out->user_ns, BPF_CORE_READ(cred, user_ns));
}

static __always_inline void read_namespaces(struct task_struct *task, const struct cred *cred, __u32 *ns)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	struct pid *tpid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(tpid, level);

	if (!nsp)       /* an exiting task has dropped its nsproxy */
		return;
	ns[TH_NS_UTS] = BPF_CORE_READ(nsp, uts_ns, ns.inum);
	ns[TH_NS_IPC] = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	ns[TH_NS_MNT] = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	ns[TH_NS_PID] = BPF_CORE_READ(tpid, numbers[level].ns, ns.inum);
	ns[TH_NS_PID_FOR_CHILDREN] = BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	ns[TH_NS_NET] = BPF_CORE_READ(nsp, net_ns, ns.inum);
	if (bpf_core_field_exists(((struct nsproxy___timens *)nsp)->time_ns)) {
		struct nsproxy___timens *tn = (void *)nsp;

		ns[TH_NS_TIME] = BPF_CORE_READ(tn, time_ns, ns.inum);
		ns[TH_NS_TIME_FOR_CHILDREN] = BPF_CORE_READ(tn, time_ns_for_children, ns.inum);
	}
	ns[TH_NS_CGROUP] = BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	ns[TH_NS_USER] = BPF_CORE_READ(cred, user_ns, ns.inum);
}

/* The process (thread group) start time, on the clock of bpf_ktime_get_boot_ns(). */
static __always_inline __u64 process_start(struct task_struct *task)
{
	return BPF_CORE_READ(task, group_leader, start_boottime);
}

#endif
