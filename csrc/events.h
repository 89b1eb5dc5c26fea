/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of every record the kernel hands to user space, and of
 * every constant both sides share.  BPF programs include this file; the cffi
 * build (csrc/build_ffi.py) hands the region between the CDEF markers to
 * ffi.cdef(), so Python reads records with exactly this layout.
 *
 * cdef() understands only plain C declarations: constants are enums, types
 * are fixed width, no #include or macro inside the region.
 */
#ifndef TETRAHOST_EVENTS_H
#define TETRAHOST_EVENTS_H

#ifdef __BPF__
/* vmlinux.h provides the kernel's fixed-width typedefs for BPF code */
typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __u64 uint64_t;
typedef __s32 int32_t;
typedef __s64 int64_t;
#else
#include <stdint.h>
#endif

/* CDEF-BEGIN */

/* Sizes of the variable parts of records.  Powers of two so BPF code can
 * bound offsets with a mask the verifier understands. */
enum th_limits {
	TH_PATH_MAX = 4096,      /* a binary or cwd path, NUL not included   */
	TH_ARGS_MAX = 4096,      /* argv bytes (NUL-separated) kept per exec  */
	TH_PATH_DEPTH = 64,      /* dentries walked for one path              */
	TH_NS_COUNT = 10,        /* namespace kinds, order of enum th_ns      */
	TH_LOSS_SLOTS = 8,       /* per-op ring buffer loss counters          */
};

/* First byte of every record: picks the decoder in user space. */
enum th_op {
	TH_OP_EXEC = 1,
	TH_OP_FORK = 2,
	TH_OP_EXIT = 3,
};

/* Order of namespace inodes in th_exec.ns[] (Tetragon's order). */
enum th_ns {
	TH_NS_UTS = 0,
	TH_NS_IPC = 1,
	TH_NS_MNT = 2,
	TH_NS_PID = 3,
	TH_NS_PID_FOR_CHILDREN = 4,
	TH_NS_NET = 5,
	TH_NS_TIME = 6,
	TH_NS_TIME_FOR_CHILDREN = 7,
	TH_NS_CGROUP = 8,
	TH_NS_USER = 9,
};

/* th_exec.flags: what the kernel side could not deliver whole. */
enum th_exec_flags {
	TH_EXEC_TRUNC_PATH = 1,   /* binary path longer than TH_PATH_MAX or deeper than TH_PATH_DEPTH */
	TH_EXEC_TRUNC_ARGS = 2,   /* argv longer than TH_ARGS_MAX                 */
	TH_EXEC_TRUNC_CWD = 4,    /* cwd longer than TH_PATH_MAX / TH_PATH_DEPTH   */
	TH_EXEC_ERR_ARGS = 8,     /* argv could not be read from user memory      */
	TH_EXEC_NO_AUID = 16,     /* kernel without audit: auid unknown           */
};

/* Common header: op selects the record type, ktime is bpf_ktime_get_boot_ns()
 * (the clock /proc/<pid>/stat's start time is counted in). */
struct th_header {
	uint8_t op;
	uint8_t pad[3];
	uint32_t size;            /* bytes of the whole record as submitted */
	uint64_t ktime;
};

struct th_creds {
	uint32_t uid, gid, euid, egid, suid, sgid, fsuid, fsgid;
};

struct th_caps {
	uint64_t effective, permitted, inheritable;
};

/*
 * A successful execve/execveat.  The variable part data[] holds, in order,
 * path_len bytes of the binary's resolved path, args_len bytes of argv
 * (each argument NUL-terminated, argv[0] included), cwd_len bytes of the
 * current directory.  Only the used bytes are submitted (hdr.size).
 */
struct th_exec {
	struct th_header hdr;
	uint32_t pid;             /* tgid */
	uint32_t tid;
	uint32_t ppid;            /* real parent's tgid */
	uint32_t auid;
	uint64_t parent_ktime;    /* real parent's start (boot ns), to link exec_ids */
	uint64_t cgroup_id;
	struct th_creds creds;
	struct th_caps caps;
	uint32_t ns[10];          /* TH_NS_COUNT inode numbers, enum th_ns order */
	uint32_t flags;           /* enum th_exec_flags */
	uint16_t path_len;
	uint16_t args_len;
	uint16_t cwd_len;
	uint16_t pad2;
	uint8_t data[12288];      /* TH_PATH_MAX + TH_ARGS_MAX + TH_PATH_MAX */
};

/* A new process (thread group leader) created by fork/clone; threads are not reported. */
struct th_fork {
	struct th_header hdr;
	uint32_t pid;
	uint32_t tid;
	uint32_t ppid;
	uint32_t pad;
	uint64_t parent_ktime;
};

/* The last thread of a process exited. */
struct th_exit {
	struct th_header hdr;
	uint32_t pid;
	uint32_t tid;
	uint32_t exit_code;       /* wait(2) status: (status << 8) | signal */
	uint32_t pad;
	uint64_t start_ktime;     /* the process's start (boot ns) */
};

/* Index of the per-op loss counters in the `losses` per-CPU array map. */
enum th_loss_slot {
	TH_LOSS_EXEC = 1,
	TH_LOSS_FORK = 2,
	TH_LOSS_EXIT = 3,
};

/* CDEF-END */

#endif /* TETRAHOST_EVENTS_H */
