/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Resolve a struct path to the absolute path the kernel sees, in BPF.
 * bpf_d_path() is not allowed in tracepoint/raw_tp/kprobe programs, so we
 * walk dentries up to the mount root, crossing mounts through struct mount,
 * and write the components backwards into a scratch buffer.
 *
 * The walk is a bpf_loop() callback (kernel 5.17+): the verifier checks one
 * step once, however many steps run, so the walk goes to the root of any
 * path up to TH_PATH_DEPTH components.  Policies compare both ends of a
 * path (Prefix/Equal the root end, Postfix the leaf end), so a path longer
 * than the buffer is walked twice:
 *   1. leaf to root, writing while the buffer has room and counting the
 *      bytes of the rest: the buffer's end then holds the leaf end, which a
 *      caller may save (Postfix);
 *   2. again, skipping leaf components until the rest fits: the buffer then
 *      holds the ROOT end, cut at a component boundary (TH_WALK_CUT).
 * Keeping the leaf end instead would let anyone dodge a Prefix policy by
 * executing from a deep enough directory.  A path deeper than TH_PATH_DEPTH
 * never reaches the root: TH_WALK_UNRESOLVED, and matchers fail closed.
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

/* What a walk could not deliver whole (returned through *how). */
enum th_walk_result {
	TH_WALK_CUT = 1,           /* longer than TH_PATH_MAX: the root end is kept */
	TH_WALK_UNRESOLVED = 2,    /* the root was not reached: the leaf end is kept */
};

struct walk_state {
	struct path_scratch *s;
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *mnt_root;
	__u32 pos;                 /* start of the path written so far */
	__u32 rest;                /* pass 1: bytes that did not fit; pass 2: bytes still to skip */
	bool skipping;             /* pass 2 */
	bool done;                 /* reached the root */
};

static long walk_step(__u32 index, void *ctx)
{
	struct walk_state *w = ctx;
	/* locals: a BPF_CORE_READ() of w->x would relocate walk_state too */
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;

	if (dentry == w->mnt_root) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);

		if (!mnt || parent == mnt) {        /* the namespace's root mount */
			w->done = true;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->mnt_root = BPF_CORE_READ(parent, mnt.mnt_root);
		return 0;
	}
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (!dentry || parent == dentry) {          /* root of a detached tree */
		w->done = true;
		return 1;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len) & TH_NAME_MAX;
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 pos = w->pos;

	w->dentry = parent;
	if (w->skipping) {                          /* pass 2: drop leaf components */
		if (w->rest) {
			w->rest = w->rest > len + 1 ? w->rest - (len + 1) : 0;
			return 0;
		}
	} else if (w->rest || len + 1 > pos) {      /* pass 1: no room left, count */
		w->rest += len + 1;
		return 0;
	}
	if (len + 1 > pos || pos > TH_PATH_MAX)     /* cannot happen: pass 2 skipped enough */
		return 1;
	pos -= len;
	struct path_scratch *s = w->s;

	bpf_probe_read_kernel(&s->buf[pos & (TH_PATH_MAX - 1)], len, name);
	pos -= 1;
	s->buf[pos & (TH_PATH_MAX - 1)] = '/';
	w->pos = pos;
	return 0;
}

static __always_inline void walk_init(struct walk_state *w, struct path_scratch *s, struct dentry *dentry,
				      struct vfsmount *vfsmnt)
{
	w->s = s;
	w->dentry = dentry;
	w->mnt = vfsmnt ? container_of(vfsmnt, struct mount, mnt) : NULL;
	w->mnt_root = vfsmnt ? BPF_CORE_READ(vfsmnt, mnt_root) : NULL;
	w->pos = TH_PATH_MAX;
	w->rest = 0;
	w->skipping = false;
	w->done = false;
}

/*
 * Walk the path of (dentry, vfsmnt) into @s; vfsmnt NULL: a dentry alone,
 * the path inside its file system.  Returns the offset in s->buf where the
 * path starts (it ends at TH_PATH_MAX, not NUL-terminated) and sets *how
 * (enum th_walk_result).  @leaf, when not NULL, receives the last
 * TH_STR_MAX bytes of a cut path (its end is not in the buffer then) and
 * *has_leaf is set.
 */
static __always_inline __u32 walk(struct path_scratch *s, struct dentry *dentry, struct vfsmount *vfsmnt,
				  __u32 *how, __u8 *leaf, __u8 *has_leaf)
{
	struct walk_state w;

	walk_init(&w, s, dentry, vfsmnt);
	bpf_loop(TH_PATH_DEPTH, walk_step, &w, 0);
	*how = 0;
	if (!w.done) {
		*how = TH_WALK_UNRESOLVED;
	} else if (w.rest) {
		__u32 skip = w.rest;

		if (leaf) {
			bpf_probe_read_kernel(leaf, TH_STR_MAX, &s->buf[TH_PATH_MAX - TH_STR_MAX]);
			*has_leaf = 1;
		}
		walk_init(&w, s, dentry, vfsmnt);
		w.skipping = true;
		w.rest = skip;
		bpf_loop(TH_PATH_DEPTH, walk_step, &w, 0);
		*how = TH_WALK_CUT;
	}
	if (w.pos == TH_PATH_MAX) {                 /* the root directory itself */
		w.pos -= 1;
		s->buf[w.pos & (TH_PATH_MAX - 1)] = '/';
	}
	return w.pos & (TH_PATH_MAX - 1);
}

static __always_inline __u32 walk_path(struct path_scratch *s, const struct path *path, __u32 *how,
				       __u8 *leaf, __u8 *has_leaf)
{
	return walk(s, BPF_CORE_READ(path, dentry), BPF_CORE_READ(path, mnt), how, leaf, has_leaf);
}

#endif
