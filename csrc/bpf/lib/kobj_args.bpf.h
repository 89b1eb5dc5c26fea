/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Policy hooks: kernel objects summarised into a record of csrc/events.h
 * (bpf_attr, bpf_map, perf_event, module, load_info) and the first segment
 * of an iov_iter.  Part of csrc/bpf/generic.bpf.c (one compilation unit).
 *
 * Every hook program carries these readers whatever its arguments, so a
 * field that a kernel may lack (a module-internal struct, a renamed member)
 * is read only behind bpf_core_*_exists(): the check is a constant at load
 * time and the verifier drops the branch, where an unresolved relocation
 * would otherwise make every hook fail to load on that kernel.
 */
#ifndef TETRAHOST_KOBJ_ARGS_BPF_H
#define TETRAHOST_KOBJ_ARGS_BPF_H

/* kernel/module/internal.h: not in every kernel's BTF (nor in our vmlinux.h);
 * libbpf matches this flavour to the kernel's struct load_info by name. */
struct load_info___th {
	const char *name;
	struct module *mod;
	bool sig_ok;
} __attribute__((preserve_access_index));

static __always_inline void read_bpf_attr(struct th_bpf_attr *a, union bpf_attr *attr)
{
	if (!attr || !bpf_core_field_exists(attr->insn_cnt))
		return;
	a->prog_type = BPF_CORE_READ(attr, prog_type);
	a->insn_cnt = BPF_CORE_READ(attr, insn_cnt);
	bpf_core_read_str(a->prog_name, sizeof(a->prog_name), &attr->prog_name);
}

static __always_inline void read_bpf_map(struct th_bpf_map *m, struct bpf_map *map)
{
	if (!map || !bpf_core_field_exists(map->max_entries))
		return;
	m->map_type = BPF_CORE_READ(map, map_type);
	m->key_size = BPF_CORE_READ(map, key_size);
	m->value_size = BPF_CORE_READ(map, value_size);
	m->max_entries = BPF_CORE_READ(map, max_entries);
	bpf_core_read_str(m->map_name, sizeof(m->map_name), &map->name);
}

/* At security_perf_event_alloc the attr is the kernel's copy, but a kprobe
 * event's function name (config1) still points into the caller's memory. */
static __always_inline void read_perf_event(struct th_perf_event *p, struct perf_event *event)
{
	if (!event || !bpf_core_field_exists(event->attr))
		return;
	p->type = BPF_CORE_READ(event, attr.type);
	p->config = BPF_CORE_READ(event, attr.config);
	p->probe_offset = BPF_CORE_READ(event, attr.config2);
	__u64 func = BPF_CORE_READ(event, attr.config1);

	if (func)
		bpf_probe_read_user_str(p->kprobe_func, sizeof(p->kprobe_func), (void *)func);
}

static __always_inline void read_module(struct th_module *m, struct module *mod)
{
	if (!mod || !bpf_core_field_exists(mod->taints))
		return;
	bpf_core_read_str(m->name, sizeof(m->name), &mod->name);
	m->taints = BPF_CORE_READ(mod, taints);
}

/* load_info: the name from the module's ELF (.modinfo), the signature
 * verdict where the kernel checks signatures (CONFIG_MODULE_SIG). */
static __always_inline void read_load_info(struct th_module *m, struct load_info___th *info)
{
	const char *name;

	if (!info || !bpf_core_type_exists(struct load_info___th) || !bpf_core_field_exists(info->name))
		return;
	name = BPF_CORE_READ(info, name);
	if (name)
		bpf_probe_read_kernel_str(m->name, sizeof(m->name), name);
	if (bpf_core_field_exists(info->mod)) {
		struct module *mod = BPF_CORE_READ(info, mod);

		if (mod && bpf_core_field_exists(mod->taints))
			m->taints = BPF_CORE_READ(mod, taints);
	}
	if (bpf_core_field_exists(info->sig_ok))
		m->flags = TH_MODULE_HAS_SIG | (BPF_CORE_READ(info, sig_ok) ? TH_MODULE_SIG_OK : 0);
}

/* Argument kinds TH_ARG_BPF_ATTR..TH_ARG_LOAD_INFO into a zeroed slot;
 * returns the record's size (the event's arg_len). */
static __always_inline __u32 kobj_read_arg(__u8 *slot, __u32 kind, __u64 raw)
{
	switch (kind) {
	case TH_ARG_BPF_ATTR:
		read_bpf_attr((struct th_bpf_attr *)slot, (union bpf_attr *)raw);
		return sizeof(struct th_bpf_attr);
	case TH_ARG_BPF_MAP:
		read_bpf_map((struct th_bpf_map *)slot, (struct bpf_map *)raw);
		return sizeof(struct th_bpf_map);
	case TH_ARG_PERF_EVENT:
		read_perf_event((struct th_perf_event *)slot, (struct perf_event *)raw);
		return sizeof(struct th_perf_event);
	case TH_ARG_MODULE:
		read_module((struct th_module *)slot, (struct module *)raw);
		return sizeof(struct th_module);
	case TH_ARG_LOAD_INFO:
		read_load_info((struct th_module *)slot, (struct load_info___th *)raw);
		return sizeof(struct th_module);
	}
	return 0;
}

/*
 * iov_iter: where its first segment is and how long, for a char_buf copy.
 * A single user buffer (ITER_UBUF, 6.0+: write(2)) or the first of an array
 * of segments (ITER_IOVEC in user memory: writev(2); ITER_KVEC in the
 * kernel's); others (pages, pipes) are not read.  iter_type's numbers moved
 * between kernels: compared with the running kernel's through CO-RE.
 * Returns 0, TH_ARG_BUF_USER or TH_ARG_BUF_KERNEL.
 */
static __always_inline __u32 iov_first_segment(struct iov_iter *it, __u64 *ptr, __u64 *size)
{
	const struct kvec *seg;
	__u8 type;

	if (!it || !bpf_core_field_exists(it->iter_type))
		return 0;
	type = BPF_CORE_READ(it, iter_type);
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		*ptr = (__u64)BPF_CORE_READ(it, ubuf);
		*size = BPF_CORE_READ(it, count);
		return TH_ARG_BUF_USER;
	}
	if (type != bpf_core_enum_value(enum iter_type, ITER_IOVEC) &&
	    type != bpf_core_enum_value(enum iter_type, ITER_KVEC))
		return 0;
	/* an iovec and a kvec have the same two members */
	seg = BPF_CORE_READ(it, kvec);
	*ptr = (__u64)BPF_CORE_READ(seg, iov_base);
	*size = BPF_CORE_READ(seg, iov_len);
	return type == bpf_core_enum_value(enum iter_type, ITER_IOVEC) ? TH_ARG_BUF_USER : TH_ARG_BUF_KERNEL;
}

#endif
