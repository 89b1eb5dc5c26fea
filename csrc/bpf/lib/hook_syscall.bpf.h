/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: syscalls of both ABIs (x86_64 and the 32-bit ia32 compat
 * ABI), for the syscall wrappers' pt_regs and the sys_enter/sys_exit fallback.
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_SYSCALL_BPF_H
#define TETRAHOST_HOOK_SYSCALL_BPF_H

/* A syscall's arguments from its pt_regs: x86_64's registers, or i386's
 * (ebx, ecx, edx, esi, edi) for a 32-bit syscall. */
static __always_inline void syscall_args(struct pt_regs *regs, __u64 *args)
{
	if (in_ia32_syscall()) {
		args[0] = (__u32)BPF_CORE_READ(regs, bx);
		args[1] = (__u32)BPF_CORE_READ(regs, cx);
		args[2] = (__u32)BPF_CORE_READ(regs, dx);
		args[3] = (__u32)BPF_CORE_READ(regs, si);
		args[4] = (__u32)BPF_CORE_READ(regs, di);
		return;
	}
	args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
}

/* Is syscall `nr` one of the hook's (th_hook_config.syscall_set)?  One bounds
 * check and one word of the bitmap: this runs on every syscall of every task. */
static __always_inline bool in_syscall_set(struct th_hook_config *cfg, __u64 nr)
{
	if (nr >= TH_SYSCALL_SET_BITS)
		return false;
	/* a 32-bit task's numbers are i386's: dup is 41 there, socket here */
	if (in_ia32_syscall())
		return cfg->syscall_set32[nr / 64] & (1ULL << (nr % 64));
	return cfg->syscall_set[nr / 64] & (1ULL << (nr % 64));
}

#endif
