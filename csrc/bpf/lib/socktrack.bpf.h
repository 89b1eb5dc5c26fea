/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Socket owners for TrackSock / UntrackSock: struct sock address -> the task
 * that owns it.  Declared by the process sensor (which creates it) and by
 * every policy hook object (which reuses the sensor's map by fd), so a
 * socket tracked by one hook is known to all.  Allocated on use: hosts
 * without a TrackSock policy pay nothing.
 */
#ifndef TETRAHOST_SOCKTRACK_BPF_H
#define TETRAHOST_SOCKTRACK_BPF_H

#include "common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct th_sock_owner);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} socktrack SEC(".maps");

/* The current task becomes the owner of sock (TrackSock). */
static __always_inline void sock_track(__u64 sock)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct th_sock_owner owner = { .pid = id >> 32, .tid = (__u32)id };

	if (sock && bpf_map_update_elem(&socktrack, &sock, &owner, BPF_ANY))
		count_loss(TH_LOSS_SOCKTRACK);
}

static __always_inline void sock_untrack(__u64 sock)
{
	if (sock)
		bpf_map_delete_elem(&socktrack, &sock);
}

/* The owner of sock, if it is tracked. */
static __always_inline struct th_sock_owner *sock_owner(__u64 sock)
{
	return sock ? bpf_map_lookup_elem(&socktrack, &sock) : NULL;
}

#endif
