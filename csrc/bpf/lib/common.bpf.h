/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Includes and small helpers every tetrahost BPF program uses. */
#ifndef TH_COMMON_BPF_H
#define TH_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "../../events.h"

#ifndef container_of
#define container_of(ptr, type, member) \
	((type *)((void *)(ptr) - __builtin_offsetof(type, member)))
#endif

/* Clamp a value with an AND the compiler cannot drop.  When clang can prove
 * a bound from an earlier comparison it removes our `& mask`, and older
 * verifiers (6.1) then lose the bound on the way to a helper's size argument. */
#define BARRIER_MASK(var, mask) asm volatile("%0 &= " #mask : "+r"(var))

/* A global BPF function: the verifier checks its body once, on its own, with
 * every argument an unknown scalar, rather than once per call with the
 * caller's state (a static function's body is re-verified at every call
 * site and for each different state reaching it).  Rules that follow: it
 * returns an int, takes scalars only (pointers into maps do not cross the
 * call: it looks its map values up itself), and checks every bound itself. */
#define TH_VERIFIED_ONCE __noinline

/* Every record reaches user space through one ring buffer; user space sizes
 * it before load (bpf_map__set_max_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

/* Whether the agent sleeps until a record wakes it (csrc/events.h, struct
 * th_ring_ctl); mmapped by user space (csrc/ring.c th_ring_doze), shared by
 * every object like the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct th_ring_ctl);
} ring_ctl SEC(".maps");

/* Records the ring buffer had no room for, per enum th_loss_slot: loss is
 * counted where it happens, so user space can report it (never silent). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TH_LOSS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

/* Puts every record type into the object's BTF (local variables alone do
 * not), so tests/unit/test_events_layout.py can compare the layouts the BPF
 * side compiled with the ones cffi compiled.  Never read or written; by value
 * because a pointer member would only add a forward declaration. */
struct th_record_types {
	struct th_exec exec;
	struct th_fork fork;
	struct th_exit exit;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct th_record_types);
} record_types SEC(".maps");

static __always_inline void count_loss(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&losses, &slot);

	if (n)
		*n += 1;
}

/* Waking the consumer costs more than building a record (an IPI to this
 * CPU; in a VM, an exit to the hypervisor): measured 14 us of a 32-byte fork
 * record's 14.5 us.  So records are submitted without a wake-up while the
 * agent reads on its own (every 100 ms while records come), except once
 * TH_WAKEUP_BYTES wait (a flood).  An agent that found nothing goes to sleep
 * instead of polling an idle ring: it sets ring_ctl.asleep, and the first
 * record after that wakes it.  The flag is read after the record is in the
 * ring (the commit's xchg orders the two), and the agent sets it before it
 * looks at the ring a last time (a fence between): so either the agent sees
 * the record, or this program sees the flag.  The wake-up goes with an empty
 * record (reserved, discarded: the reader steps over it), because the record
 * itself went out before the flag was read.  Two CPUs may both wake it:
 * harmless. */
static __always_inline void wake_if_asleep(void)
{
	__u32 key = 0;
	struct th_ring_ctl *ctl = bpf_map_lookup_elem(&ring_ctl, &key);
	void *nudge;

	if (!ctl || !ctl->asleep)
		return;
	ctl->asleep = 0;
	nudge = bpf_ringbuf_reserve(&events, 8, 0);
	if (nudge)
		bpf_ringbuf_discard(nudge, BPF_RB_FORCE_WAKEUP);
}

/* Submit size bytes of rec, counting a loss when the ring buffer is full. */
static __always_inline void submit(void *rec, __u64 size, __u32 slot)
{
	int flood = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= TH_WAKEUP_BYTES;

	if (bpf_ringbuf_output(&events, rec, size, flood ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP))
		count_loss(slot);
	else if (!flood)
		wake_if_asleep();
}

/* A hook record goes out up to the end of its last used argument slot (or of
 * the return slot when it is used), not whole: one integer argument makes a
 * 196-byte record instead of 1,728 bytes, so the ring buffer holds eight
 * times more of them under a flood and the consumer copies less.  The size goes in
 * hdr.size too (csrc/events.h, struct th_hook_event). */
static __always_inline void submit_hook(struct th_hook_event *ev)
{
	__u64 end = 0;

	for (int i = 0; i < TH_MAX_ARGS; i++) {
		__u32 n = ev->arg_len[i];

		if (n)
			end = i * TH_STR_SLOT + (n < TH_STR_SLOT ? n : TH_STR_SLOT);
	}
	if (ev->ret_len)
		end = TH_RET_SLOT * TH_STR_SLOT + (ev->ret_len < TH_STR_SLOT ? ev->ret_len : TH_STR_SLOT);
	end += __builtin_offsetof(struct th_hook_event, data);
	/* The clamp in the register the helper gets, in asm: from C, clang
	 * clamped a copy and Debian 6.1's verifier saw only a mask's bound
	 * (2047 > the 1728-byte map value of a parked return event). */
	asm volatile("if %[end] <= %[max] goto +1\n\t"
		     "%[end] = %[max]"
		     : [end] "+r"(end) : [max] "i"(sizeof(struct th_hook_event)));
	ev->hdr.size = end;
	submit(ev, end, TH_LOSS_HOOK);
}

#endif
