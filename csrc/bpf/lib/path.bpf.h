/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Resolve a struct path to the absolute path the kernel sees, in BPF.
 * bpf_d_path() is not allowed in tracepoint/raw_tp/kprobe programs, so we
 * walk dentries up to the mount root, crossing mounts through struct mount,
 * and write the components backwards into a scratch buffer.
 *
 * The walk is a bpf_loop() callback (kernel 5.17+): the verifier checks one
 * step once, where an open-coded loop of TH_PATH_DEPTH steps with a branch
 * per mount crossing exceeds its 1M-instruction budget.
 */
#ifndef TH_PATH_BPF_H
#define TH_PATH_BPF_H

#include "common.bpf.h"

#define TH_NAME_MAX 255

/* Scratch space for one walk.  The slack after TH_PATH_MAX lets the verifier
 * accept a write of up to TH_NAME_MAX bytes at any masked offset. */
struct path_scratch {
	char buf[TH_PATH_MAX + TH_NAME_MAX + 1];
};

struct walk_state {
	struct path_scratch *s;
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *mnt_root;
	__u32 pos;                 /* start of the path written so far */
	bool done;                 /* reached the root */
	bool truncated;
};

static long walk_step(__u32 index, void *ctx)
{
	struct walk_state *w = ctx;
	/* locals: a BPF_CORE_READ() of w->x would relocate walk_state too */
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;

	if (dentry == w->mnt_root) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);

		if (parent == mnt) {                /* the namespace's root mount */
			w->done = true;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->mnt_root = BPF_CORE_READ(parent, mnt.mnt_root);
		return 0;
	}
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (parent == dentry) {                     /* root of a detached tree */
		w->done = true;
		return 1;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 pos = w->pos;

	if (len > TH_NAME_MAX || len + 1 > pos || pos > TH_PATH_MAX) {
		w->truncated = true;
		return 1;
	}
	pos -= len;
	struct path_scratch *s = w->s;

	bpf_probe_read_kernel(&s->buf[pos & (TH_PATH_MAX - 1)], len & TH_NAME_MAX, name);
	pos -= 1;
	s->buf[pos & (TH_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->dentry = parent;
	return 0;
}

/*
 * Walk @path into @s.  Returns the offset in s->buf where the path starts
 * (it ends at TH_PATH_MAX, not NUL-terminated); sets *truncated when the
 * path was longer than the buffer or deeper than TH_PATH_DEPTH, in which case
 * the result holds the innermost components that fit.
 */
static __always_inline __u32 finish_walk(struct path_scratch *s, struct walk_state *w, bool *truncated)
{
	bpf_loop(TH_PATH_DEPTH, walk_step, w, 0);
	*truncated = w->truncated || !w->done;
	if (w->pos == TH_PATH_MAX) {                /* the root directory itself */
		w->pos -= 1;
		s->buf[w->pos & (TH_PATH_MAX - 1)] = '/';
	}
	return w->pos & (TH_PATH_MAX - 1);
}

static __always_inline __u32 walk_path(struct path_scratch *s, const struct path *path,
				       bool *truncated)
{
	struct vfsmount *vfsmnt = BPF_CORE_READ(path, mnt);
	struct walk_state w = {
		.s = s,
		.dentry = BPF_CORE_READ(path, dentry),
		.mnt = container_of(vfsmnt, struct mount, mnt),
		.mnt_root = BPF_CORE_READ(vfsmnt, mnt_root),
		.pos = TH_PATH_MAX,
	};

	return finish_walk(s, &w, truncated);
}

/* A dentry alone: the path inside its file system (no mount to cross). */
static __always_inline __u32 walk_dentry(struct path_scratch *s, struct dentry *dentry, bool *truncated)
{
	struct walk_state w = { .s = s, .dentry = dentry, .pos = TH_PATH_MAX };

	return finish_walk(s, &w, truncated);
}

#endif
