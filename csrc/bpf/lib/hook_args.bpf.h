/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: reading a hook's arguments into the event's slots
 * (integers, strings, paths, buffers, credentials, sockets).
 * Part of csrc/bpf/generic.bpf.c (one compilation unit), split for reading.
 */
#ifndef TETRAHOST_HOOK_ARGS_BPF_H
#define TETRAHOST_HOOK_ARGS_BPF_H

/* ---- reading arguments ------------------------------------------------- */

/* Put a walked path into a TH_STR_SLOT-byte, zero-padded slot; returns its
 * length.  The slot holds the path's root end (what Prefix and Equal
 * compare); a path longer than the slot also leaves its leaf end in tail[t]
 * (Postfix), unless the walk saved it there already (a path longer than the
 * walk's buffer).  how: the walk's enum th_walk_result. */
static __always_inline __u32 path_to_slot(struct hook_scratch *s, __u8 *slot, __u32 pos, __u32 how, __u32 t)
{
	__u32 len = TH_PATH_MAX - pos;

	if (how & TH_WALK_UNRESOLVED) {
		s->unresolved[t & 7] = 1;
		s->ev.flags |= TH_HOOK_PATH_UNRESOLVED;
	}
	if (len > TH_STR_MAX) {
		len = TH_STR_MAX;
		how |= TH_WALK_CUT;
		if (!s->has_tail[t & 7]) {
			/* the walk builds the path at the end of buf: its last bytes are there */
			bpf_probe_read_kernel(s->tail[t & 7], TH_STR_MAX, &s->path.buf[TH_PATH_MAX - TH_STR_MAX]);
			s->has_tail[t & 7] = 1;
		}
	}
	if (how)
		s->ev.flags |= TH_HOOK_ARG_TRUNC;
	BARRIER_MASK(len, 255);            /* TH_STR_SLOT - 1 */
	BARRIER_MASK(pos, 4095);           /* TH_PATH_MAX - 1 */
	bpf_probe_read_kernel(slot, len, &s->path.buf[pos]);
	return len;
}

/* The walk of (dentry, vfsmnt) into argument t's slot; vfsmnt NULL for a
 * dentry alone. */
static __always_inline __u32 walk_to_slot(struct hook_scratch *s, __u8 *slot, struct dentry *dentry,
					  struct vfsmount *vfsmnt, __u32 t)
{
	__u32 how, pos;

	pos = walk(&s->path, dentry, vfsmnt, &how, s->tail[t & 7], &s->has_tail[t & 7]);
	return path_to_slot(s, slot, pos, how, t);
}

/*
 * The path a file was opened by, as its user sees it.  Since 6.6 a stacking
 * file system (overlayfs, FUSE passthrough) opens the real file as a
 * "backing file" whose f_path is the real one, on a private mount that no
 * namespace reaches (security_file_open runs for it too); the path the user
 * opened is the backing_file's user_path.  Which f_mode bit marks a backing
 * file moved between kernels (even within Debian's 6.12 line), so it is
 * recognised by what it is: f_path on a detached mount that is not the
 * task's root, and a user_path whose mount and dentry agree on their super
 * block (memory after an ordinary struct file does not).
 */
static __always_inline void file_user_path(struct file *file, struct dentry **dentry, struct vfsmount **vfsmnt)
{
	*dentry = BPF_CORE_READ(file, f_path.dentry);
	*vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	if (!bpf_core_type_exists(struct backing_file) || !*vfsmnt)
		return;
	struct mount *m = container_of(*vfsmnt, struct mount, mnt);
	struct task_struct *task = (void *)bpf_get_current_task();

	if (BPF_CORE_READ(m, mnt_parent) != m || *vfsmnt == BPF_CORE_READ(task, fs, root.mnt))
		return;
	struct backing_file *bf = container_of(file, struct backing_file, file);
	struct vfsmount *user_mnt = BPF_CORE_READ(bf, user_path.mnt);
	struct dentry *user_dentry = BPF_CORE_READ(bf, user_path.dentry);
	struct super_block *sb = BPF_CORE_READ(user_mnt, mnt_sb);

	if (sb && sb == BPF_CORE_READ(user_dentry, d_sb)) {
		*dentry = user_dentry;
		*vfsmnt = user_mnt;
	}
}

static __always_inline __u32 file_to_slot(struct hook_scratch *s, __u8 *slot, struct file *file, __u32 t)
{
	struct vfsmount *vfsmnt;
	struct dentry *dentry;

	if (!file)
		return 0;
	file_user_path(file, &dentry, &vfsmnt);
	return walk_to_slot(s, slot, dentry, vfsmnt, t);
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
 * syscall arguments, and the count; returns how many were copied (what a
 * matcher compares).  At the entry (sizeArgIndex) and at the return
 * (returnCopy: size is what the call returned); flags: the event's. */
static __always_inline __u32 fill_char_buf(struct th_char_buf *b, __u8 kind, __u64 ptr, __u64 size,
					   __u8 *flags)
{
	__u32 n = size > TH_BUF_MAX ? TH_BUF_MAX : size;
	long err = 0;

	if (size > TH_BUF_MAX)
		*flags |= TH_HOOK_ARG_TRUNC;
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
	return kind == TH_ARG_INT || kind == TH_ARG_CAP_SET || kind == TH_ARG_SYSCALL64;
}

/* A string longer than its slot: read it again, whole (up to TH_PATH_MAX),
 * into the path scratch and keep its last TH_STR_MAX bytes for Postfix.
 * Only long strings pay for this second read. */
static __always_inline void string_tail(struct hook_scratch *s, __u32 i, __u8 kind, __u64 raw)
{
	long n = kind == TH_ARG_STR_USER ? bpf_probe_read_user_str(s->path.buf, TH_PATH_MAX, (void *)raw)
					 : bpf_probe_read_kernel_str(s->path.buf, TH_PATH_MAX, (void *)raw);
	__u32 start;

	if (n <= TH_STR_MAX)               /* changed under us: no tail to speak of */
		return;
	start = n - 1 - TH_STR_MAX;        /* n counts the NUL */
	BARRIER_MASK(start, 4095);         /* TH_PATH_MAX - 1; buf is followed by more scratch */
	bpf_probe_read_kernel(s->tail[i & 7], TH_STR_MAX, &s->path.buf[start]);
	s->has_tail[i & 7] = 1;
}

/*
 * `resolve:` (th_hook_config.resolve[i]): from argument i's value, the
 * struct members user space found in the kernel's BTF, as pointer loads and
 * an offset; returns what the argument's kind reads (0 when a pointer on the
 * way is NULL or unreadable).  Global, verified once like read_arg.
 */
TH_VERIFIED_ONCE __u64 resolve_arg(__u32 i, __u64 p)
{
	__u32 zero = 0;
	struct th_hook_config *cfg = bpf_map_lookup_elem(&hook_config, &zero);
	__u64 v = 0;

	BARRIER_MASK(i, 7);             /* the bound below is then on the register used */
	if (!cfg || i >= TH_MAX_ARGS)
		return 0;
	struct th_resolve *r = &cfg->resolve[i];

	for (int k = 0; k < TH_MAX_RESOLVE_STEPS; k++) {
		if (k >= r->nloads)
			break;
		if (!p || bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + r->loads[k])))
			return 0;
	}
	if (!p)
		return 0;
	p += r->last_offset;
	__u32 n = r->last_size;

	if (!n)
		return p;
	if (n > sizeof(v))
		n = sizeof(v);
	if (bpf_probe_read_kernel(&v, n, (void *)p))
		return 0;
	if (n < sizeof(v) && r->last_signed) {
		int shift = 64 - 8 * n;

		v = (__u64)((__s64)(v << shift) >> shift);
	}
	return v;
}

/*
 * Argument i of kind `kind` (value raw) into its slot of the event in
 * scratch slot `scratch`; size: the value of the argument holding a
 * char_buf's byte count.
 *
 * A global function (not static), like the other TH_VERIFIED_ONCE ones: the
 * verifier checks its body once, on its own, instead of once per call with
 * each caller's state (five argument slots times every kind was a third of
 * all verification work).  Only scalars cross such a call; the scratch is
 * looked up again.  Its locals and the path walk's loop context also stay
 * out of the entry program's frame (6.1 caps a call chain at 512 bytes).
 */
TH_VERIFIED_ONCE int read_arg(__u32 scratch, __u32 i, __u32 kind, __u64 raw, __u64 size)
{
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &scratch);
	struct vfsmount *vfsmnt = NULL;
	struct dentry *dentry = NULL;
	struct file *file = NULL;
	__u32 len = 0;
	long n;

	if (!s || i >= TH_MAX_ARGS)
		return 0;
	BARRIER_MASK(i, 7);             /* the verifier knows nothing of i: keep its bound */
	__u8 *slot = arg_slot(s, i);

	s->has_tail[i & 7] = 0;
	s->unresolved[i & 7] = 0;
	if (kind == TH_ARG_INT) {
		*(__u64 *)slot = raw;
		s->ev.arg_len[i] = 8;
		return 0;
	}
	if (kind == TH_ARG_SYSCALL64) {
		/* Tetragon's syscall64: the ABI rides in the value, so one InMap
		 * set tells x86_64 dup (32) from i386 dup (41 | I386) */
		*(__u64 *)slot = raw | (in_ia32_syscall() ? (__u64)TH_SYSCALL64_I386 : 0);
		s->ev.arg_len[i] = 8;
		return 0;
	}
	if (kind == TH_ARG_CAP_SET) {
		*(__u64 *)slot = 0;
		/* 8 bytes: u32[2] before 6.3, one u64 after (see read_caps) */
		bpf_probe_read_kernel(slot, 8, (void *)raw);
		s->ev.arg_len[i] = 8;
		return 0;
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
			string_tail(s, i, kind, raw);
		}
		break;
	/* every path kind: one walk below (each inlined walk is verified again) */
	case TH_ARG_FILE:
		file = (struct file *)raw;
		break;
	case TH_ARG_BPRM:
		file = BPF_CORE_READ((struct linux_binprm *)raw, file);
		break;
	case TH_ARG_KIOCB:
		file = BPF_CORE_READ((struct kiocb *)raw, ki_filp);
		break;
	case TH_ARG_FD:
		file = fd_to_file(raw);
		break;
	case TH_ARG_PATH:
		if (raw) {
			dentry = BPF_CORE_READ((struct path *)raw, dentry);
			vfsmnt = BPF_CORE_READ((struct path *)raw, mnt);
		}
		break;
	case TH_ARG_DENTRY:
		dentry = (struct dentry *)raw;
		break;
	case TH_ARG_SOCK ... TH_ARG_NETDEV:
		/* a net_device's name starts the slot, matched as a string this long */
		s->arg_str_len[i] = net_read_arg((struct th_sock_tuple *)slot, kind, raw);
		s->ev.arg_len[i] = sizeof(struct th_sock_tuple);
		return 0;
	case TH_ARG_BPF_ATTR ... TH_ARG_LOAD_INFO:
		s->arg_str_len[i] = 0;
		s->ev.arg_len[i] = kobj_read_arg(slot, kind, raw);
		return 0;
	case TH_ARG_IOV_ITER:
		/* its first segment, as a char_buf (Tetragon's too) */
		size = 0;
		kind = iov_first_segment((struct iov_iter *)raw, &raw, &size);
		s->arg_str_len[i] = kind ? fill_char_buf((struct th_char_buf *)slot, kind, raw, size, &s->ev.flags) : 0;
		s->ev.arg_len[i] = sizeof(struct th_char_buf);
		return 0;
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
		s->arg_str_len[i] = fill_char_buf((struct th_char_buf *)slot, kind, raw, size, &s->ev.flags);
		s->ev.arg_len[i] = sizeof(struct th_char_buf);
		return 0;
	}
	if (file && (kind == TH_ARG_FILE || kind == TH_ARG_KIOCB) &&
	    (BPF_CORE_READ(file, f_mode) & TH_FMODE_NOACCOUNT))
		return TH_READ_ARG_BACKING_FILE;      /* see csrc/events.h th_file_mode */
	if (file)
		file_user_path(file, &dentry, &vfsmnt);
	if (dentry)
		len = walk_to_slot(s, slot, dentry, vfsmnt, i);
	s->arg_str_len[i] = len;
	s->ev.arg_len[i] = len;
	return TH_READ_ARG_OK;
}

/* The caller's executable (mm->exe_file), resolved once per event when a
 * selector needs it.  Global, like read_arg: its path walk is verified once
 * rather than at every selector's call site. */
TH_VERIFIED_ONCE int resolve_binary(__u32 scratch)
{
	struct hook_scratch *s = bpf_map_lookup_elem(&hook_heap, &scratch);
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	if (!s)
		return 0;
	__builtin_memset(s->binary, 0, TH_STR_SLOT);
	s->has_tail[TH_TAIL_BINARY] = 0;
	s->unresolved[TH_TAIL_BINARY] = 0;
	s->binary_len = file_to_slot(s, s->binary, exe, TH_TAIL_BINARY);
	return 0;
}

/* returnCopy: the buffer is filled by the call (read(2)...), so the entry
 * only keeps where it is; copy_returned_buffer reads it at the return. */
static __always_inline void keep_buffer_pointer(struct hook_scratch *s, __u32 i, __u64 ptr)
{
	struct th_char_buf *b = (struct th_char_buf *)arg_slot(s, i);

	if (i >= TH_MAX_ARGS)
		return;
	__builtin_memset(b, 0, sizeof(*b));
	*(__u64 *)b->data = ptr;
	s->arg_str_len[i] = 0;
	s->ev.arg_len[i] = sizeof(*b);
}

#endif
