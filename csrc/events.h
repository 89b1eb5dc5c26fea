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
	TH_PATH_DEPTH = 16384,   /* dentries (and mount crossings) walked for one path:
	                          * a bpf_loop() bound, paid only by paths that deep */
	TH_NS_COUNT = 10,        /* namespace kinds, order of enum th_ns      */
	TH_LOSS_SLOTS = 8,       /* per-op ring buffer loss counters          */
};

/* First byte of every record: picks the decoder in user space. */
enum th_op {
	TH_OP_EXEC = 1,
	TH_OP_FORK = 2,
	TH_OP_EXIT = 3,
	TH_OP_HOOK = 4,
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
	TH_EXEC_TRUNC_PATH = 1,   /* binary path longer than TH_PATH_MAX (its root end is kept)
	                           * or deeper than TH_PATH_DEPTH (TH_EXEC_PATH_UNRESOLVED) */
	TH_EXEC_TRUNC_ARGS = 2,   /* argv longer than TH_ARGS_MAX                 */
	TH_EXEC_TRUNC_CWD = 4,    /* cwd longer than TH_PATH_MAX / TH_PATH_DEPTH   */
	TH_EXEC_ERR_ARGS = 8,     /* argv could not be read from user memory      */
	TH_EXEC_NO_AUID = 16,     /* kernel without audit: auid unknown           */
	TH_EXEC_PATH_UNRESOLVED = 32, /* the binary's root was not reached: only its leaf end is known */
};

/* Who owns a socket (TrackSock): events about it name this task even when
 * the hook runs elsewhere (softirq, another task's send on loopback). */
struct th_sock_owner {
	uint32_t pid;
	uint32_t tid;
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
	uint32_t ns[TH_NS_COUNT];  /* inode numbers, enum th_ns order */
	uint32_t flags;           /* enum th_exec_flags */
	uint16_t path_len;
	uint16_t args_len;
	uint16_t cwd_len;
	uint16_t pad2;
	uint8_t data[TH_PATH_MAX + TH_ARGS_MAX + TH_PATH_MAX];
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
	TH_LOSS_HOOK = 4,
	TH_LOSS_HOOK_BUSY = 5,    /* every scratch slot of the CPU was in use: hook not evaluated */
	TH_LOSS_SOCKTRACK = 6,    /* TrackSock: the socket owner map was full          */
};

/* When a record wakes the agent (csrc/bpf/lib/common.bpf.h): the first one
 * after the agent went to sleep (it sets `asleep` in the ring_ctl map), and
 * any once this many bytes wait unread, which the agent reads at once. */
enum th_ring_wakeup {
	TH_WAKEUP_BYTES = 65536,     /* 64 KiB */
};

struct th_ring_ctl {
	uint32_t asleep;          /* 1: the agent waits for a wake-up; the waker clears it */
	uint32_t pad;
};

/* Export progress that outlives the agent (tetrahost/export/delivery.py):
 * for each exporter, the ring buffer position up to which its events are
 * written, so the next agent re-reads what was not written and does not
 * write twice what was.  A map of the process object that no BPF program
 * touches: user space mmaps it, and it is pinned with the ring buffer whose
 * positions it holds. */
enum th_delivered_limits {
	TH_DELIVERED_SLOTS = 16,  /* exporters tracked (file, journald, stdout...) */
};

struct th_delivered {
	uint64_t exporter;        /* hash of the exporter's name; 0: a free slot      */
	uint64_t pos;             /* ring position after the last record it wrote     */
};

/* ---- Policy hooks (csrc/bpf/generic.bpf.c) -------------------------------
 * One BPF object per hook of a TracingPolicy.  User space compiles the
 * policy's selectors into one th_hook_config (map `hook_config`, key 0) plus
 * string sets (maps `str_equal`, `str_prefix`); the program evaluates them in
 * the kernel, so activity no selector matches never reaches user space. */

enum th_hook_limits {
	TH_MAX_ARGS = 5,          /* arguments read per hook                         */
	TH_MAX_SELECTORS = 5,     /* selectors per hook (Tetragon's limit)          */
	TH_MAX_MATCH_ARGS = 5,    /* matchArgs entries per selector                  */
	TH_MAX_INT_VALUES = 8,    /* integer values per matchArgs / matchPIDs entry  */
	TH_MAX_NS_MATCH = 4,      /* matchNamespaces entries per selector            */
	TH_MAX_PID_MATCH = 4,     /* matchPIDs entries per selector (ANDed)          */
	TH_MAX_PID_VALUES = 4,    /* values per matchPIDs entry (Tetragon's limit)    */
	TH_PID_ANCESTORS = 32,    /* matchPIDs followForks: the task and at most this
	                           * many - 1 ancestors are compared                  */
	TH_STR_MAX = 252,         /* bytes of a string/path argument kept and matched:
	                           * an LPM trie key holds 256 bytes, 4 go to set_id  */
	TH_STR_SLOT = 256,        /* stride of arguments in th_hook_event.data        */
	TH_RET_SLOT = 5,          /* the slot after the arguments: a return value read
	                           * as a non-integer type (returnArg: sock)           */
	TH_SYS_CHAIN_MAX = 31,    /* syscall-fallback hooks on one syscall: a tail-call
	                           * chain, and the kernel allows 33 tail calls       */
	TH_SYS_HOOK_SLOTS = 1024, /* syscall-fallback hooks loaded at once (dispatcher slots) */
	TH_SYSCALL_SET_BITS = 512,/* th_hook_config.syscall_set: syscall numbers below this */
	TH_STR_SET_ENTRIES = 1024,/* entries of each string-set map of a hook (str_equal,
	                           * str_prefix, str_postfix): the strings of all its
	                           * selectors' Equal/In, Prefix, Postfix values (matchArgs
	                           * and matchBinaries), with no limit per entry      */
	TH_INT_SET_ENTRIES = 4096,/* entries of a hook's int_set map: every integer of its
	                           * InMap/NotInMap values, ranges and lists expanded  */
	TH_ENFORCER_NOTES = 32768,/* threads with a pending NotifyEnforcer at once     */
	TH_STACK_DEPTH = 127,     /* frames kept of a stack trace (PERF_MAX_STACK_DEPTH) */
	TH_STACK_ENTRIES = 1024,  /* distinct stacks the stack_traces map of a hook with
	                           * kernelStackTrace/userStackTrace holds (a power of two:
	                           * a new stack then replaces, never fails)          */
	TH_MAX_RESOLVE_STEPS = 8, /* pointers one `resolve:` path dereferences        */
};

/* A struct file the kernel opened itself, on behalf of a file the caller
 * opened (overlayfs' and FUSE passthrough's backing files, cachefiles):
 * f_mode's FMODE_NOACCOUNT (include/linux/fs.h; 0x20000000 on every kernel
 * that has it).  On overlayfs, where containers and many hosts keep their
 * files, one open(2) calls security_file_open twice (the overlay file, then
 * its backing file): a hook whose `file`/`kiocb` argument is such a file
 * does nothing, so one access is one event and one action. */
enum th_file_mode {
	TH_FMODE_NOACCOUNT = 0x20000000,
};

/* read_arg's result */
enum th_read_arg {
	TH_READ_ARG_OK = 0,
	TH_READ_ARG_BACKING_FILE = 1,   /* the argument is a kernel-internal file: skip the event */
};

/* th_selector.stack_traces: Post's kernelStackTrace / userStackTrace */
enum th_stack_flags {
	TH_STACK_KERNEL = 1,
	TH_STACK_USER = 2,
};

/* syscall64 arguments (Tetragon's Is32Bit): the syscall number, with this bit
 * set when the task made a 32-bit (ia32 compat) syscall, whose numbers are
 * i386's.  InMap values of 32-bit list entries carry it too. */
enum th_syscall64 {
	TH_SYSCALL64_I386 = 0x80000000,
};

/* How an argument is read (th_hook_config.arg_kind). */
enum th_arg_kind {
	TH_ARG_NONE = 0,
	TH_ARG_INT = 1,           /* the raw 64-bit register value                   */
	TH_ARG_STR_KERNEL = 2,    /* char * in kernel memory                         */
	TH_ARG_STR_USER = 3,      /* char * in user memory (syscall arguments)       */
	TH_ARG_FILE = 4,          /* struct file *  -> its path                      */
	TH_ARG_PATH = 5,          /* struct path *  -> the path                      */
	TH_ARG_DENTRY = 6,        /* struct dentry * -> path inside its file system  */
	TH_ARG_BPRM = 7,          /* struct linux_binprm * -> the executed file's path */
	TH_ARG_FD = 8,            /* int fd of the current task -> the file's path   */
	/* network arguments: the slot holds a struct th_sock_tuple */
	TH_ARG_SOCK = 9,          /* struct sock *                                   */
	TH_ARG_SOCKET = 10,       /* struct socket * -> its sock, type from the socket */
	TH_ARG_SOCKADDR = 11,     /* struct sockaddr * in kernel memory: saddr/sport  */
	TH_ARG_SOCKADDR_USER = 12,/* struct sockaddr * in user memory (syscalls)     */
	TH_ARG_SKB = 13,          /* struct sk_buff * -> its IPv4/IPv6 + TCP/UDP headers */
	TH_ARG_NETDEV = 14,       /* struct net_device * -> ifname, ifindex, netns   */
	/* the slot holds a struct th_cred / th_user_ns / th_char_buf */
	TH_ARG_CRED = 15,         /* struct cred *                                   */
	TH_ARG_USER_NS = 16,      /* struct user_namespace *                         */
	TH_ARG_BUF_KERNEL = 17,   /* char_buf: bytes in kernel memory, count from another argument */
	TH_ARG_BUF_USER = 18,     /* char_buf in user memory (syscall arguments)     */
	TH_ARG_CAP_SET = 19,      /* kernel_cap_t * -> its 64-bit mask, matched as an integer */
	TH_ARG_SYSCALL64 = 20,    /* a syscall number, TH_SYSCALL64_I386 added for a 32-bit
	                           * syscall; matched as an integer                  */
	/* kernel objects summarised into a record (csrc/bpf/lib/kobj_args.bpf.h) */
	TH_ARG_KIOCB = 21,        /* struct kiocb * -> its file's path (ki_filp)       */
	TH_ARG_IOV_ITER = 22,     /* struct iov_iter * -> a th_char_buf of its first segment */
	TH_ARG_BPF_ATTR = 23,     /* union bpf_attr * (BPF_PROG_LOAD) -> th_bpf_attr   */
	TH_ARG_BPF_MAP = 24,      /* struct bpf_map * -> th_bpf_map                    */
	TH_ARG_PERF_EVENT = 25,   /* struct perf_event * -> th_perf_event              */
	TH_ARG_MODULE = 26,       /* struct module * -> th_module                      */
	TH_ARG_LOAD_INFO = 27,    /* struct load_info * (a module being loaded) -> th_module */
};

/* Network selectors and the network limits. */
enum th_net_limits {
	TH_MAX_CIDRS = 32,        /* address prefixes per hook (th_hook_config.cidrs) */
	TH_PORT_PRIV_MAX = 1023,  /* SPortPriv/DPortPriv: ports below 1024            */
};

/* th_sock_tuple.flags */
enum th_sock_flags {
	TH_SOCK_HAS_PORTS = 1,    /* sport/dport were read (TCP/UDP/SCTP, sockaddr)   */
	TH_SOCK_READ_FAILED = 2,  /* the object could not be read (NULL, bad memory)  */
};

/* Matcher operators; negation is a separate flag. */
enum th_match_op {
	TH_MATCH_EQUAL = 1,       /* ints: any value equal; strings: in str_equal set */
	TH_MATCH_PREFIX = 2,      /* strings: in str_prefix LPM trie                  */
	TH_MATCH_GT = 3,
	TH_MATCH_LT = 4,
	TH_MATCH_MASK = 5,        /* ints: (arg & value) != 0 for any value           */
	/* network arguments (th_sock_tuple); values[] per operator: */
	TH_MATCH_SADDR = 6,       /* indexes into th_hook_config.cidrs                */
	TH_MATCH_DADDR = 7,
	TH_MATCH_SPORT = 8,       /* ranges: low | high << 16, inclusive              */
	TH_MATCH_DPORT = 9,
	TH_MATCH_SPORT_PRIV = 10, /* no values: port < 1024                           */
	TH_MATCH_DPORT_PRIV = 11,
	TH_MATCH_PROTOCOL = 12,   /* IPPROTO_* numbers                                */
	TH_MATCH_FAMILY = 13,     /* AF_* numbers                                     */
	TH_MATCH_STATE = 14,      /* TCP_* state numbers                              */
	TH_MATCH_POSTFIX = 15,    /* strings: reversed, in str_postfix LPM trie       */
	TH_MATCH_IN_MAP = 16,     /* ints: (set_id, value) in the int_set hash map    */
};

/* th_pid_matcher.flags */
enum th_pid_flags {
	TH_PID_FOLLOW_FORKS = 1,  /* the task or one of its ancestors has the pid     */
	TH_PID_NAMESPACE = 2,     /* pids as seen in each task's own pid namespace    */
};

enum th_action {
	TH_ACTION_POST = 1,
	TH_ACTION_NOPOST = 2,
	TH_ACTION_SIGKILL = 3,
	TH_ACTION_SIGNAL = 4,
	TH_ACTION_OVERRIDE = 5,
	TH_ACTION_TRACK_SOCK = 6,   /* action_arg: the sock argument whose owner is recorded */
	TH_ACTION_UNTRACK_SOCK = 7, /* ... whose record is dropped                     */
	TH_ACTION_SET = 8,          /* USDT: write th_selector.set_value into the memory of
	                             * argument action_arg (bpf_probe_write_user)      */
	TH_ACTION_NOTIFY_ENFORCER = 9, /* note (notify_error, action_arg = signal) for this
	                            * thread in enforcer_notes: the policy's enforcer acts
	                            * on it at its syscall (th_enforcer_exit)          */
};

/* th_hook_event.flags */
enum th_hook_event_flags {
	TH_HOOK_MONITOR = 1,      /* policy-mode monitor: enforcement not done        */
	TH_HOOK_SIGNAL_FAILED = 2,/* bpf_send_signal() refused                        */
	TH_HOOK_ARG_TRUNC = 4,    /* a string/path argument was cut at TH_STR_MAX      */
	TH_HOOK_HAS_RETURN = 8,   /* retval holds the function's return value          */
	TH_HOOK_SOCK_OWNER = 16,  /* pid/tid are the owner of the event's socket (TrackSock),
	                           * not the task the hook ran in                       */
	TH_HOOK_PATH_UNRESOLVED = 32, /* a path's root was not reached (deeper than TH_PATH_DEPTH):
	                           * Prefix/Equal on it failed closed (the selector matched) */
	TH_HOOK_SET_FAILED = 64,  /* Set: the argument's memory could not be written    */
	TH_HOOK_COMPAT = 128,     /* the task was in a 32-bit (ia32) syscall: syscall_nr is
	                           * an i386 number                                  */
};

enum th_hook_config_flags {
	TH_CFG_SYSCALL_WRAPPER = 1,  /* kprobe on __x64_sys_*: arguments are in the inner pt_regs */
	TH_CFG_NEEDS_BINARY = 2,     /* a selector has matchBinaries: resolve the caller's binary */
	TH_CFG_RETURN = 4,           /* return probe: the entry parks a matching event in
	                              * `pending`, the return program completes and posts it */
	TH_CFG_ENFORCER = 8,         /* spec.enforcers: no selectors; acts on this thread's
	                              * enforcer_notes entry of enforcer_id at its syscalls */
	TH_CFG_IMA_HASH = 16,        /* LSM hook with its sleepable IMA program attached: an
	                              * event whose selector asks imaHash is parked in
	                              * `ima_parked`; that program adds the hash and posts it */
	TH_CFG_NEEDS_NS = 32,        /* a selector reads the caller's namespaces
	                              * (matchNamespaces, matchNamespaceChanges,
	                              * isNamespaceCapability): read before the selectors;
	                              * without it only an event that matched reads them  */
};

/* imaHash: th_hook_event.ima_digest holds at most this many bytes (SHA-512);
 * ima_algo is the kernel's enum hash_algo (HASH_ALGO_SHA256 = 4...). */
enum th_ima_limits {
	TH_IMA_DIGEST_MAX = 64,
};

/* ---- Per-process state the process sensor keeps (map proc_state) ----------
 * Hook objects share the map (by fd) to evaluate matchCapabilityChanges,
 * matchNamespaceChanges and matchBinaries followChildren.  Kept only while a
 * loaded policy needs it (proc_feature[0] != 0); user space seeds the
 * processes that existed before from /proc when it turns it on. */
enum th_proc_state_limits {
	TH_PROC_STATE_MAX = 32768,   /* processes tracked; more are not (their selectors
	                              * that need the state do not match)            */
	TH_FOLLOW_BITS = 64,         /* matchBinaries followChildren entries, all policies */
};

struct th_proc_state {
	uint64_t follow_bits;     /* bit i: this process or an ancestor (at its fork)
	                           * executed a binary of followChildren entry i    */
	struct th_caps caps;      /* at the last exec (or fork, or when first seen)  */
	uint32_t ns[TH_NS_COUNT];  /* at the same moment */
	uint32_t pad;
};

/* Tracepoint arguments are fields of the trace record: th_hook_config
 * arg_offset[] says where, arg_field[] how to read it (the field's size in
 * bytes, or one of these flags). */
enum th_field_access {
	TH_FIELD_INLINE = 0x40,      /* char name[N] inside the record: the string is at the offset  */
	TH_FIELD_DATALOC = 0x80,     /* __data_loc char[]: a u32 at the offset, low 16 bits = offset */
};

/* Post's rateLimitScope: whose posts share one rate limit. */
enum th_rate_scope {
	TH_RATE_THREAD = 0,
	TH_RATE_PROCESS = 1,
	TH_RATE_GLOBAL = 2,
};

/* matchCapabilities / matchCapabilityChanges: which set of the task's
 * credentials a selector reads (th_selector.caps_kind, capch_kind). */
enum th_caps_kind {
	TH_CAPS_NONE = 0,
	TH_CAPS_EFFECTIVE = 1,
	TH_CAPS_PERMITTED = 2,
	TH_CAPS_INHERITABLE = 3,
};

/* th_hook_config.exec_target_arg / ret_copy_arg: no such argument (a uint8_t all ones) */
enum th_no_arg {
	TH_NO_ARG = 0xff,
};

/* An address prefix of a SAddr/DAddr matcher: matches when the family is
 * equal and (address & mask) == addr, word by word (IPv4 in addr[0..3]). */
struct th_cidr {
	uint16_t family;          /* AF_INET or AF_INET6                              */
	uint8_t prefixlen;        /* for user space; the kernel uses mask              */
	uint8_t pad;
	uint8_t addr[16];         /* network order, already masked                    */
	uint8_t mask[16];
};

struct th_arg_matcher {
	uint8_t arg;              /* position in the hook's arguments                */
	uint8_t op;               /* enum th_match_op                                 */
	uint8_t negate;
	uint8_t nvalues;          /* integer values used                              */
	uint32_t set_id;          /* strings: id of this matcher's set in the maps    */
	int64_t values[TH_MAX_INT_VALUES];
};

struct th_ns_matcher {
	uint8_t kind;             /* enum th_ns                                       */
	uint8_t negate;
	uint8_t nvalues;
	uint8_t pad;
	uint32_t inums[TH_MAX_INT_VALUES];
};

struct th_pid_matcher {
	uint8_t negate;           /* NotIn                                            */
	uint8_t flags;            /* enum th_pid_flags                                */
	uint8_t nvalues;
	uint8_t pad;
	uint32_t pids[TH_MAX_PID_VALUES];
};

struct th_selector {
	uint8_t nargs;            /* th_arg_matcher entries used                      */
	uint8_t nns;              /* th_ns_matcher entries used                       */
	uint8_t bin_op;           /* 0, TH_MATCH_EQUAL, TH_MATCH_PREFIX or TH_MATCH_POSTFIX */
	uint8_t bin_negate;
	uint32_t bin_set_id;
	uint8_t npids;            /* th_pid_matcher entries used                      */
	uint8_t bin_follow;       /* followChildren: 1 + bit in th_proc_state.follow_bits, 0: off */
	uint8_t caps_kind;        /* enum th_caps_kind                                */
	uint8_t caps_negate;
	uint8_t action;           /* enum th_action                                   */
	uint8_t rate_scope;       /* enum th_rate_scope, with rate_limit_ns            */
	uint8_t no_post;          /* NoPost beside the action: act, emit nothing       */
	uint8_t capch_kind;       /* matchCapabilityChanges: as caps_kind, 0 none     */
	uint8_t capch_negate;
	int32_t action_arg;       /* signal number, the errno Override returns, or
	                           * TrackSock/UntrackSock's sock argument position    */
	uint64_t caps_mask;       /* In: any of these bits set                        */
	uint64_t rate_limit_ns;   /* Post at most once per this many ns per scope, 0: always */
	uint32_t caps_userns;     /* isNamespaceCapability: the host user ns inode; a task in
	                           * it never matches (its caps are not namespaced). 0: off */
	uint32_t capch_userns;    /* the same for matchCapabilityChanges              */
	uint64_t capch_mask;      /* In: one of these changed; NotIn: only others changed */
	uint16_t nsch_mask;       /* matchNamespaceChanges: bit (1 << enum th_ns) of each
	                           * kind whose change matches; 0: no such matcher     */
	uint8_t stack_traces;     /* enum th_stack_flags: stacks the event references  */
	uint8_t ima_hash;         /* imaHash: the event waits for the hook's IMA hash
	                           * (only where TH_CFG_IMA_HASH is set)               */
	int32_t notify_error;     /* NotifyEnforcer's argError (action_arg: its argSig) */
	int64_t set_value;        /* Set: the value written (its argument's size of it) */
	struct th_pid_matcher pids[TH_MAX_PID_MATCH];
	struct th_arg_matcher args[TH_MAX_MATCH_ARGS];
	struct th_ns_matcher ns[TH_MAX_NS_MATCH];
};

/* USDT arguments (spec.usdts): where the probe point keeps each argument,
 * compiled by user space from the argument string of the binary's
 * .note.stapsdt entry ("-4@%edi", "8@-16(%rbp)", "4@$5"). */
enum th_usdt_arg_loc {
	TH_USDT_NONE = 0,         /* no such argument                                  */
	TH_USDT_CONST = 1,        /* the value is `value`                               */
	TH_USDT_REG = 2,          /* the register at reg_off in struct pt_regs          */
	TH_USDT_MEM = 3,          /* user memory at that register + value               */
};

struct th_usdt_arg {
	int64_t value;            /* the constant, or the displacement from the register */
	uint16_t reg_off;         /* byte offset of the register in struct pt_regs       */
	uint8_t loc;              /* enum th_usdt_arg_loc                               */
	uint8_t size;             /* bytes of the value: 1, 2, 4 or 8                   */
	uint8_t is_signed;        /* sign-extend it to 64 bits                          */
	uint8_t pad[3];
};

/* `resolve:` on argument i (th_hook_config.resolve[i]): the struct members
 * followed from the argument's value, compiled by user space from the running
 * kernel's BTF (tetrahost/policy/resolve.py).  The BPF side loads
 * value = *(u64 *)(value + loads[k]) for each k < nloads, adds last_offset,
 * and then, unless last_size is 0, reads the integer of last_size bytes
 * there.  The result is what the argument's kind reads (an address of a
 * char array, a struct pointer, an integer).  A NULL on the way reads 0. */
struct th_resolve {
	uint8_t active;           /* 0: the argument is read as it is                  */
	uint8_t nloads;           /* loads[] used, at most TH_MAX_RESOLVE_STEPS         */
	uint8_t last_size;        /* 0, 1, 2, 4 or 8                                    */
	uint8_t last_signed;      /* sign-extend that integer to 64 bits                */
	uint32_t last_offset;
	uint32_t loads[TH_MAX_RESOLVE_STEPS];
};

/* The syscall dispatcher's chain for one syscall: the slots of the hooks on
 * it, in the order they run. */
struct th_sys_chain {
	uint16_t n;
	uint16_t slot[TH_SYS_CHAIN_MAX];
};

struct th_hook_config {
	uint32_t hook_id;         /* user space's id, echoed in events                */
	uint8_t nselectors;
	uint8_t monitor;          /* policy-mode monitor: report, do not enforce      */
	uint16_t pad0;
	uint8_t arg_kind[TH_MAX_ARGS];  /* enum th_arg_kind */
	uint8_t arg_src[TH_MAX_ARGS];  /* which function/syscall argument each one reads */
	uint8_t exec_target_arg;  /* exec hooks: arg holding the new binary, else TH_NO_ARG */
	uint8_t flags;            /* enum th_hook_config_flags                        */
	uint16_t arg_offset[TH_MAX_ARGS];  /* tracepoints: field offset in the record; char_buf
	                           * of other hooks: the argument holding its size    */
	uint8_t arg_field[TH_MAX_ARGS];  /* tracepoints: field size, or enum th_field_access */
	uint8_t ncidrs;           /* th_cidr entries used                              */
	uint8_t ret_size;         /* return probes: bytes of the return type (1, 2, 4, 8) */
	uint8_t ret_signed;       /* ... and whether to sign-extend it                   */
	uint8_t ret_copy_arg;     /* char_buf with returnCopy: its position, else TH_NO_ARG; the
	                           * entry keeps the pointer, the return copies as many
	                           * bytes as the function returned                     */
	uint8_t ret_kind;         /* returnArg read as enum th_arg_kind into TH_RET_SLOT,
	                           * 0: an integer (retval only)                      */
	uint8_t ret_action;       /* returnArgAction: 0, TH_ACTION_TRACK_SOCK or UNTRACK */
	uint8_t pad1[4];
	uint16_t dispatch_slot;   /* sys_enter/sys_exit fallback: this hook's slot in the
	                           * syscall dispatcher (lib/dispatch.bpf.h)            */
	/* sys_enter/sys_exit fallback: bit n of word n / 64 set = syscall n is hooked
	 * (one syscall, or a spec.lists syscall list); all zero = none */
	uint64_t syscall_set[TH_SYSCALL_SET_BITS / 64];
	/* the same for 32-bit (ia32) syscalls, by i386 number: checked instead of
	 * syscall_set when the task is in a 32-bit syscall */
	uint64_t syscall_set32[TH_SYSCALL_SET_BITS / 64];
	uint32_t enforcer_id;     /* NotifyEnforcer: the id of its policy's enforcer;
	                           * TH_CFG_ENFORCER: this enforcer's id              */
	uint32_t pad2;
	struct th_selector selectors[TH_MAX_SELECTORS];
	/* matchReturnArgs of selector i (op 0: none), checked at the return
	 * against the value normalised by ret_size/ret_signed */
	struct th_arg_matcher ret_match[TH_MAX_SELECTORS];
	struct th_cidr cidrs[TH_MAX_CIDRS];  /* SAddr/DAddr prefixes */
	struct th_usdt_arg usdt_args[TH_MAX_ARGS];  /* USDT arguments 0..4 (th_usdt) */
	struct th_resolve resolve[TH_MAX_ARGS];  /* each argument's `resolve:` path */
};

/* What a network argument's slot in th_hook_event.data holds. Addresses in
 * network order (IPv4 in the first 4 bytes), ports in host order.  For a
 * sockaddr the one address and port it holds are saddr/sport. */
struct th_sock_tuple {
	uint8_t ifname[16];       /* net_device: its name (IFNAMSIZ); zero for the other
	                           * kinds.  First, so that the string matchers find a
	                           * net_device's name where they find any string: at
	                           * the start of its slot (its NUL counted in its
	                           * length, the rest of the tuple follows it)        */
	uint16_t family;          /* AF_INET, AF_INET6, AF_UNIX...                    */
	uint16_t type;            /* SOCK_STREAM, SOCK_DGRAM... (sock, socket)        */
	uint16_t protocol;        /* IPPROTO_*                                         */
	uint8_t state;            /* TCP_* (sock, socket)                              */
	uint8_t flags;            /* enum th_sock_flags                                */
	uint16_t sport;
	uint16_t dport;
	uint32_t netns;           /* inode of the network namespace (sock, skb's dev)  */
	uint32_t ifindex;         /* bound device (sock), device (skb, net_device)     */
	uint32_t mark;
	uint32_t priority;
	uint32_t len;             /* skb: bytes                                        */
	uint64_t cookie;          /* sock: the struct sock's address (same in every event of one socket) */
	uint8_t saddr[16];
	uint8_t daddr[16];
};

/* What a user_namespace argument's slot holds (and th_cred.user_ns). */
struct th_user_ns {
	int32_t level;            /* nesting: 0 is the initial user namespace          */
	uint32_t uid;             /* owner                                             */
	uint32_t gid;             /* group                                             */
	uint32_t inum;            /* inode of the namespace                            */
};

enum th_cred_flags {
	TH_CRED_READ_FAILED = 1,  /* NULL pointer: nothing was read                    */
};

/* What a cred argument's slot holds. */
struct th_cred {
	struct th_creds ids;
	uint32_t securebits;      /* SECBIT_* bits                                     */
	uint32_t flags;           /* enum th_cred_flags                                */
	struct th_caps caps;
	struct th_user_ns user_ns;
};

/* char_buf arguments: at most TH_BUF_MAX bytes are copied, the rest is
 * counted.  size holds the count the size argument gave (saturated at
 * TH_BUF_SIZE_MAX); bit TH_BUF_FAULT_SHIFT is set when the bytes could not
 * be read.  The data start the slot so Equal/Prefix match them like a string. */
enum th_buf_limits {
	TH_BUF_MAX = 252,         /* TH_STR_MAX: what a slot holds before size        */
	TH_BUF_SIZE_MAX = 2147483647,
	TH_BUF_FAULT_SHIFT = 31,
};

struct th_char_buf {
	uint8_t data[TH_BUF_MAX];
	uint32_t size;
};

/* What the slot of a kernel-object argument holds (TH_ARG_BPF_ATTR...);
 * names are NUL-terminated when shorter than their array. */
enum th_kobj_limits {
	TH_BPF_OBJ_NAME = 16,     /* BPF_OBJ_NAME_LEN                                  */
	TH_KSYM_NAME = 128,       /* KSYM_NAME_LEN: a kprobe perf event's function      */
	TH_MODULE_NAME = 64,      /* MODULE_NAME_LEN on 64-bit kernels is 56; room to spare */
};

/* union bpf_attr of BPF_PROG_LOAD */
struct th_bpf_attr {
	uint32_t prog_type;       /* enum bpf_prog_type                                */
	uint32_t insn_cnt;
	uint8_t prog_name[TH_BPF_OBJ_NAME];
};

struct th_bpf_map {
	uint32_t map_type;        /* enum bpf_map_type                                 */
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint8_t map_name[TH_BPF_OBJ_NAME];
};

/* struct perf_event's attr: kprobe_func is read for every type (it is config1,
 * the probed function's name in user memory for kprobe perf events) */
struct th_perf_event {
	uint64_t config;
	uint64_t probe_offset;    /* config2                                           */
	uint32_t type;            /* PERF_TYPE_* or a dynamic PMU's number             */
	uint32_t pad;
	uint8_t kprobe_func[TH_KSYM_NAME];
};

enum th_module_flags {
	TH_MODULE_HAS_SIG = 1,    /* load_info: the kernel checks signatures (sig_ok read) */
	TH_MODULE_SIG_OK = 2,     /* ... and this module's signature was good          */
};

/* struct module, or the module of a struct load_info */
struct th_module {
	uint64_t taints;          /* the module's TAINT_* bits (1 << TAINT_...)         */
	uint32_t flags;           /* enum th_module_flags                              */
	uint32_t pad;
	uint8_t name[TH_MODULE_NAME];
};

/* Key of the string sets.  The same bytes serve the hash map str_equal (key
 * starts at set_id) and the LPM trie str_prefix (key starts at prefixlen,
 * which counts the 32 bits of set_id plus 8 per matched byte). */
struct th_str_key {
	uint32_t prefixlen;
	uint32_t set_id;
	uint8_t data[TH_STR_MAX];  /* zero padded; str_postfix: reversed */
};

struct th_hook_event {
	struct th_header hdr;
	uint32_t pid;
	uint32_t tid;
	uint32_t hook_id;
	uint8_t selector;         /* index of the selector that matched               */
	uint8_t action;           /* enum th_action taken (or that would be: monitor) */
	uint8_t flags;            /* enum th_hook_event_flags                         */
	uint8_t pad;
	int64_t action_arg;       /* signal sent or errno returned                    */
	int64_t retval;           /* return probes: the return value (TH_HOOK_HAS_RETURN) */
	uint32_t ns[TH_NS_COUNT];  /* the task's namespaces when the hook fired */
	uint16_t arg_len[TH_MAX_ARGS];  /* bytes of each argument in data (ints: 8) */
	uint16_t ret_len;         /* bytes of the return value in TH_RET_SLOT (ret_kind) */
	int32_t syscall_nr;       /* syscall hooks: the number of the syscall that fired
	                           * (a list hook covers several), else -1             */
	uint32_t pad2;
	int32_t kernel_stack_id;  /* kernelStackTrace: the stack's id in the hook's
	                           * stack_traces map, < 0 none (or the helper's error) */
	int32_t user_stack_id;    /* userStackTrace: the same for the user stack      */
	int32_t ima_algo;         /* imaHash: enum hash_algo of ima_digest, < 0 none   */
	uint32_t pad3;
	uint8_t ima_digest[TH_IMA_DIGEST_MAX];  /* the digest, as long as its algorithm's */
	uint8_t data[(TH_MAX_ARGS + 1) * TH_STR_SLOT];  /* argument i at i * 256,
	                           * the return value at TH_RET_SLOT * 256.  Submitted
	                           * up to the end of the last slot used (arg_len,
	                           * ret_len), not whole: hdr.size says how much    */
};

/* Key of a hook's int_set map (InMap / NotInMap on integers). */
struct th_int_key {
	uint32_t set_id;
	uint32_t pad;
	int64_t value;
};

/* A NotifyEnforcer verdict waiting for the enforcer's syscall (map
 * enforcer_notes, key: the thread's pid_tgid). */
struct th_enforcer_note {
	uint32_t enforcer_id;     /* whose enforcer acts on it                        */
	uint32_t hook_id;         /* the hook that noted it                           */
	int32_t error;            /* argError: the return value the call should get   */
	int32_t sig;              /* argSig: signal to send, 0 none                   */
};

/* CDEF-END */

#endif /* TETRAHOST_EVENTS_H */
