"""Every numeric limit the policy front end enforces, in one place.

Each number says where it comes from. "Tetragon docs" means the Tetragon
documentation page docs/content/en/docs/concepts/tracing-policy/selectors.md,
section "Limitations" (and the pages named next to the value); "Tetragon CRD"
means the kubebuilder markers of the TracingPolicy types
(pkg/k8s/apis/cilium.io/v1alpha1/types.go); "Tetragon BPF" means the BPF headers
(bpf/process/generic... `MAX_POSSIBLE_ARGS`). We keep Tetragon's documented
numbers so a policy accepted here is also valid for Tetragon, and so the kernel
compiler can size its maps and unrolled loops from these constants.

A limit the kernel side has too is read from csrc/events.h (through
tetrahost/constants.py, generated from it), never written a second time here,
so the validator rejects, with file and line, what the kernel side cannot hold
instead of the compiler failing later.
"""

from tetrahost import constants as abi

# Selectors per hook. Tetragon docs: "Each hook can contain up to 5 selectors" /
# "Max Selectors 5". (Tetragon's BPF has room for 31, the documented limit is 5.)
MAX_SELECTORS_PER_HOOK = abi.TH_MAX_SELECTORS

# Arguments per hook. Tetragon BPF: MAX_POSSIBLE_ARGS 5 (msg_generic_kprobe
# carries 5 argument slots).
MAX_ARGS_PER_HOOK = abi.TH_MAX_ARGS

# Highest function-argument index a kprobe/LSM arg can read: the BPF side reads
# registers PARM1..PARM5 (MAX_POSSIBLE_ARGS 5 -> indexes 0..4).
MAX_KPROBE_ARG_INDEX = MAX_ARGS_PER_HOOK - 1

# sizeArgIndex is 1-based in Tetragon (docs/reference/tracing-policy.md: "does not
# take the index, but the number of the index (or index + 1)"), so 1..5.
MAX_SIZE_ARG_INDEX = MAX_KPROBE_ARG_INDEX + 1

# matchArgs entries per selector. Tetragon docs: "Max MatchArgs per selector 5
# (one per index)".
MAX_MATCHARGS_PER_SELECTOR = abi.TH_MAX_MATCH_ARGS

# Values per matchArgs entry for integer and network operators (Equal, NotEqual,
# GT, LT, Mask, ports, addresses, Protocol, ...): they are kept inline in the
# selector (th_arg_matcher.values).  Tetragon allows 4 (pkg/selectors
# writeMatchValues: "maxMatchValues := 4"); the kernel side here holds 8.
MAX_MATCHARG_VALUES = abi.TH_MAX_INT_VALUES

# String and path values (Equal/NotEqual, Prefix/NotPrefix, Postfix/NotPostfix
# on string, char_buf, file, fd, path, ... arguments; matchBinaries values) go
# to BPF maps, hash or LPM trie, as in Tetragon (whose docs still say 8 for
# files, while its code puts them in maps sized by the policy): no limit per
# entry, only the maps' capacity per hook and kind of set.
MAX_STRING_SET_ENTRIES = abi.TH_STR_SET_ENTRIES

# InMap/NotInMap integers (numbers, min:max ranges, syscall lists, expanded)
# go to one hash map per hook, as in Tetragon: bounded by its capacity.
MAX_INT_SET_ENTRIES = abi.TH_INT_SET_ENTRIES

# String prefix / postfix lengths. Tetragon docs: "String prefix max length: 256
# chars", "String postfix max length: 128 chars".
MAX_PREFIX_LENGTH = 256
MAX_POSTFIX_LENGTH = 128

# Longest string/path value we accept for Equal; Linux PATH_MAX (4096) including
# the NUL, since no kernel path or string argument we read can be longer.
MAX_EQUAL_STRING_LENGTH = 4095

# matchPIDs values per entry. Tetragon docs: "Max PID values per selector 4".
MAX_PID_VALUES = abi.TH_MAX_PID_VALUES

# matchNamespaces. Tetragon docs, "Namespaces filter" limitations: "up to 4
# values" per namespace entry (the kernel side holds TH_MAX_INT_VALUES), and up
# to 10 namespace entries (the number of namespace kinds) on kernels >= 5.3; the
# kernel side here evaluates TH_MAX_NS_MATCH entries per selector.
MAX_NAMESPACE_VALUES = min(4, abi.TH_MAX_INT_VALUES)
MAX_NAMESPACES_PER_SELECTOR = abi.TH_MAX_NS_MATCH

# matchBinaries sections with followChildren: true. Tetragon docs, "Follow
# children": "cannot exceed 64". Enforced per policy file here.
MAX_FOLLOW_CHILDREN_SECTIONS = 64

# Tags per hook. Tetragon CRD: "+kubebuilder:validation:MaxItems=16".
MAX_TAGS = 16

# Hook message length. Tetragon CRD: "A short message of 256 characters max".
MAX_MESSAGE_LENGTH = 256

# Signal numbers for the Signal action: 1..SIGRTMAX (64 on Linux).
MAX_SIGNAL = 64

# --- Limits on the file itself (not Tetragon's): a policy path may name any
# file and a policy file may come from an untrusted author, so reading one is
# bounded in bytes, nodes, nesting and number size (docs/policies.md, "Limits
# on policy files").

# Bytes of one policy file. The largest real policy we know (a syscall list
# over every syscall, with selectors) is a few tens of KiB.
MAX_POLICY_FILE_BYTES = 1 << 20

# YAML nodes of one file, every alias counted as the whole subtree it repeats
# ("billion laughs" files are refused instead of expanded).
MAX_YAML_NODES = 50_000

# Nesting levels of YAML collections; a policy needs about 8.
MAX_YAML_DEPTH = 64

# Characters of a YAML number: a 64-bit value needs at most 66 (0b and 64
# binary digits); anything longer is out of range for every field.
MAX_NUMBER_TEXT = 80

# Longest Post rateLimit: one year, written in any unit ("8760h").
MAX_RATE_LIMIT_SECONDS = 365 * 24 * 3600

# Highest tracepoint argument index (a field of the event's record): no
# tracepoint format has this many fields.
MAX_TRACEPOINT_ARG_INDEX = 255
