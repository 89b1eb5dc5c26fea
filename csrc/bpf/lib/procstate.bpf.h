/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Per-process state kept by the process sensor (csrc/bpf/process.bpf.c) and
 * read by policy hooks (csrc/bpf/generic.bpf.c), which reuse the process
 * sensor's map by fd: one definition here so both objects declare the same. */
#ifndef TH_PROCSTATE_BPF_H
#define TH_PROCSTATE_BPF_H

#include "common.bpf.h"

/* tgid -> struct th_proc_state.  Preallocated (no allocation in the sched
 * tracepoints).  Filled only while proc_feature says a policy needs it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TH_PROC_STATE_MAX);
	__type(key, __u32);
	__type(value, struct th_proc_state);
} proc_state SEC(".maps");

#endif
