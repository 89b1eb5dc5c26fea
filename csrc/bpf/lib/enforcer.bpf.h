/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * spec.enforcers: a NotifyEnforcer action notes a verdict (error, signal)
 * for the current thread; the policy's enforcer acts on it when the thread
 * is at one of the enforcer's syscalls.  Declared by the process sensor
 * (which creates it) and by every policy hook object (which reuses the
 * sensor's map by fd), so a note taken by one hook reaches the enforcer's
 * program, another object.  Allocated on use.
 */
#ifndef TETRAHOST_ENFORCER_BPF_H
#define TETRAHOST_ENFORCER_BPF_H

#include "common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TH_ENFORCER_NOTES);
	__type(key, __u64);
	__type(value, struct th_enforcer_note);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} enforcer_notes SEC(".maps");

#endif
