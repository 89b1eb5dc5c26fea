// SPDX-License-Identifier: GPL-2.0-only
/*
 * Smoke test of enforcement through BPF-LSM (tests/vm/test_probe_vm.py): deny
 * the exec of files whose inode number user space put in `deny_ino`.
 *
 * Keyed by inode number alone: on overlayfs (the test guest's root) stat()'s
 * st_dev can name another super block than the exec'd inode's i_sb, so a
 * (dev, ino) key might never match.  Good enough for a test that copies a
 * binary to a fresh inode and removes it afterwards.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lib/lsm_ret.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TH_EPERM 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);     /* inode number */
	__type(value, __u32);   /* unused */
} deny_ino SEC(".maps");

/* [0]: execs checked, [1]: execs denied */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} smoke_hits SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&smoke_hits, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("lsm/bprm_check_security")
long BPF_PROG(smoke_deny_exec, struct linux_binprm *bprm, int ret)
{
	__u64 ino;

	if (ret)                /* an earlier LSM already said no: keep its verdict */
		return lsm_ret(ret);
	count(0);
	ino = BPF_CORE_READ(bprm, file, f_inode, i_ino);
	if (!bpf_map_lookup_elem(&deny_ino, &ino))
		return 0;
	count(1);
	return -TH_EPERM;
}
