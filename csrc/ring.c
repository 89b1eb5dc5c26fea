/* A BPF ring buffer reader whose read position and commit position differ.
 *
 * libbpf's ring_buffer__consume() moves the kernel-visible consumer position
 * past each record as it hands it over: a record the agent has read but its
 * exporters have not yet written is gone from the ring, and a kill -9 in that
 * moment loses it for good.  Here reading only moves th_ring.read_pos; the
 * consumer position (what the kernel may overwrite) moves when the caller
 * commits, once the records' events are written.  A pinned ring buffer then
 * hands the next agent everything its predecessor had not delivered.
 *
 * Layout (the kernel's, include/uapi/linux/bpf.h and kernel/bpf/ringbuf.c):
 * page 0 holds the consumer position (writable by us), page 1 the producer
 * position, then the data area mapped twice in a row, so a record that wraps
 * is contiguous.  Each record starts with an 8-byte header: 32-bit length
 * with the BUSY (still being written) and DISCARD bits, and 4 bytes we do
 * not use; records are 8-byte aligned. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>

struct th_ring {
	uint64_t *consumer_pos;
	uint64_t *producer_pos;
	uint8_t *data;
	uint64_t mask;
	uint64_t read_pos;
	size_t page_size;
	uint64_t oversized;	/* records larger than the caller's buffer: stepped over */
};

#define TH_RING_HDR 8u		/* the kernel's record header */
/* Our header before each record in `out`: 4-byte length, 8-byte end position. */
static const unsigned int th_ring_out_hdr = 12;

/* Map the ring buffer behind map_fd; 0 or a negative errno. */
static int th_ring_map(struct th_ring *r, int map_fd)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	void *p;

	memset(&info, 0, sizeof(info));
	memset(r, 0, sizeof(*r));
	if (bpf_obj_get_info_by_fd(map_fd, &info, &len))
		return -errno;
	if (info.type != BPF_MAP_TYPE_RINGBUF)
		return -EINVAL;
	r->page_size = (size_t)sysconf(_SC_PAGESIZE);
	p = mmap(NULL, r->page_size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	r->consumer_pos = p;
	p = mmap(NULL, r->page_size + 2 * (size_t)info.max_entries, PROT_READ, MAP_SHARED, map_fd,
		 (off_t)r->page_size);
	if (p == MAP_FAILED) {
		int err = -errno;

		munmap(r->consumer_pos, r->page_size);
		r->consumer_pos = NULL;
		return err;
	}
	r->producer_pos = p;
	r->data = (uint8_t *)p + r->page_size;
	r->mask = (uint64_t)info.max_entries - 1;
	r->read_pos = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	return 0;
}

static void th_ring_unmap(struct th_ring *r)
{
	if (r->producer_pos)
		munmap(r->producer_pos, r->page_size + 2 * (size_t)(r->mask + 1));
	if (r->consumer_pos)
		munmap(r->consumer_pos, r->page_size);
	memset(r, 0, sizeof(*r));
}

/* Copy the records after read_pos into out, each as a 4-byte length, the
 * 8-byte ring position just after the record, and its bytes (no padding),
 * stopping at max_records, when out is full or at a record
 * still being written.  Returns the number of records; *used: bytes of out.
 * Discarded records are stepped over, and so is one larger than out_len
 * (counted in r->oversized: no buffer of this size could ever take it). */
static int th_ring_read(struct th_ring *r, uint8_t *out, size_t out_len, int max_records, size_t *used)
{
	uint64_t prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	size_t off = 0;
	int n = 0;

	while (r->read_pos < prod && n < max_records) {
		uint32_t *hdr = (uint32_t *)(r->data + (r->read_pos & r->mask));
		uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
		uint32_t size = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);

		if (len & BPF_RINGBUF_BUSY_BIT)
			break;
		uint64_t end = r->read_pos + ((size + TH_RING_HDR + 7) & ~7ull);

		if (!(len & BPF_RINGBUF_DISCARD_BIT) && th_ring_out_hdr + (size_t)size > out_len) {
			r->oversized++;		/* never fits: skipping it is the only way on */
		} else if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
			if (off + th_ring_out_hdr + size > out_len)
				break;
			memcpy(out + off, &size, 4);
			memcpy(out + off + 4, &end, 8);
			memcpy(out + off + th_ring_out_hdr, (uint8_t *)hdr + TH_RING_HDR, size);
			off += th_ring_out_hdr + size;
			n++;
		}
		r->read_pos = end;
	}
	*used = off;
	return n;
}

/* Let the kernel reuse the ring up to pos (a read_pos the caller saw). */
static void th_ring_commit(struct th_ring *r, uint64_t pos)
{
	__atomic_store_n(r->consumer_pos, pos, __ATOMIC_RELEASE);
}

static uint64_t th_ring_consumer(struct th_ring *r)
{
	return __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
}

static uint64_t th_ring_producer(struct th_ring *r)
{
	return __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
}

/* Go to sleep on the ring unless records wait after read_pos: sets *asleep
 * (the ring_ctl map's flag, mmapped) so that the next record wakes the
 * reader (csrc/bpf/lib/common.bpf.h wake_if_asleep), then looks at the ring
 * once more.  The fence orders our store before that load; the BPF side
 * writes its record before it loads the flag: either we see the record here,
 * or it sees the flag and wakes us.  Returns 1 asleep, 0 when records wait
 * (the flag is cleared again: the caller reads them). */
static int th_ring_doze(struct th_ring *r, uint32_t *asleep)
{
	__atomic_store_n(asleep, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE) > r->read_pos) {
		__atomic_store_n(asleep, 0, __ATOMIC_RELAXED);
		return 0;
	}
	return 1;
}
