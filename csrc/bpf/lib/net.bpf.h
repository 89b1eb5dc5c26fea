/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Network arguments -> struct th_sock_tuple (csrc/events.h).
 *
 * Every reader fills the tuple the generic program keeps in an argument's
 * 256-byte slot; selectors (SAddr, DPort, Protocol...) then read the tuple,
 * never the kernel object again.  All kernel reads are CO-RE, so one object
 * serves 6.1 and 6.18: sk_protocol/sk_type were bitfields before 5.6, hence
 * the PROBED bitfield reads.
 */
#ifndef TH_NET_BPF_H
#define TH_NET_BPF_H

#include "common.bpf.h"
#include <bpf/bpf_endian.h>

#define TH_AF_INET 2
#define TH_AF_INET6 10
#define TH_IPPROTO_TCP 6
#define TH_IPPROTO_UDP 17
#define TH_IPPROTO_SCTP 132

static __always_inline bool net_has_ports(__u16 protocol)
{
	return protocol == TH_IPPROTO_TCP || protocol == TH_IPPROTO_UDP || protocol == TH_IPPROTO_SCTP;
}

static __always_inline __u32 net_inum(struct net *net)
{
	return net ? BPF_CORE_READ(net, ns.inum) : 0;
}

/* struct sock: the 5-tuple as the socket holds it (addresses of an
 * unconnected socket are zero), plus type, state, mark, netns. */
static __always_inline void net_read_sock(struct th_sock_tuple *t, struct sock *sk)
{
	if (!sk) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	t->protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	t->type = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_type);
	t->mark = BPF_CORE_READ(sk, sk_mark);
	t->priority = BPF_CORE_READ(sk, sk_priority);
	t->ifindex = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
	t->netns = net_inum(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	/* the struct sock's address: the same socket has the same cookie in
	 * every event (connect, sendmsg, close), as in Tetragon */
	t->cookie = (__u64)sk;
	if (t->family == TH_AF_INET) {
		/* explicit sizes: BPF_CORE_READ_INTO would copy sizeof(saddr[0]) */
		bpf_core_read(t->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(t->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (t->family == TH_AF_INET6) {
		bpf_core_read(t->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return;
	}
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	t->flags |= TH_SOCK_HAS_PORTS;
}

/* struct socket: its sock, with the socket's own type. */
static __always_inline void net_read_socket(struct th_sock_tuple *t, struct socket *sock)
{
	if (!sock) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	net_read_sock(t, BPF_CORE_READ(sock, sk));
	t->type = BPF_CORE_READ(sock, type);
}

/* struct sockaddr_in / sockaddr_in6 (the layouts are UAPI): family at 0,
 * port at 2, IPv4 address at 4, IPv6 address at 8.  The one address is
 * reported as saddr/sport.  Read straight into the tuple: the generic
 * program's stack is nearly full (512 bytes over all its frames on 6.1). */
static __always_inline long net_read_mem(void *dst, __u32 size, const void *src, bool user)
{
	return user ? bpf_probe_read_user(dst, size, src) : bpf_probe_read_kernel(dst, size, src);
}

static __always_inline void net_read_sockaddr(struct th_sock_tuple *t, const void *addr, bool user)
{
	long err;

	if (!addr || net_read_mem(&t->family, 2, addr, user)) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	if (t->family == TH_AF_INET)
		err = net_read_mem(t->saddr, 4, addr + 4, user);
	else if (t->family == TH_AF_INET6)
		err = net_read_mem(t->saddr, 16, addr + 8, user);
	else
		return;
	if (err || net_read_mem(&t->sport, 2, addr + 2, user)) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	t->sport = bpf_ntohs(t->sport);
	t->flags |= TH_SOCK_HAS_PORTS;
}

/* struct net_device: name, ifindex, netns. */
static __always_inline __u32 net_read_netdev(struct th_sock_tuple *t, struct net_device *dev)
{
	long n;

	if (!dev) {
		t->flags |= TH_SOCK_READ_FAILED;
		return 0;
	}
	n = bpf_probe_read_kernel_str(t->ifname, sizeof(t->ifname), __builtin_preserve_access_index(&dev->name));
	t->ifindex = BPF_CORE_READ(dev, ifindex);
	t->netns = net_inum(BPF_CORE_READ(dev, nd_net.net));
	/* the name's length with its NUL: what follows the name in the slot is
	 * the rest of the tuple, so user space makes Equal a prefix ending in the
	 * NUL (tetrahost/policy/compile_selectors.py) */
	return n > 0 ? n : 0;
}

/* struct sk_buff: its IP header (wire layout) and, for TCP/UDP/SCTP, the
 * ports at the start of the transport header.  Needs the network header set
 * (true on the output path from ip_local_out on, and on input after ip_rcv). */
static __always_inline void net_read_skb(struct th_sock_tuple *t, struct sk_buff *skb)
{
	__u8 vihl = 0;                     /* version << 4 | IHL, the header's first byte */
	__u32 l4;

	if (!skb) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	struct net_device *dev = BPF_CORE_READ(skb, dev);

	t->len = BPF_CORE_READ(skb, len);
	t->mark = BPF_CORE_READ(skb, mark);
	t->priority = BPF_CORE_READ(skb, priority);
	if (dev) {
		t->ifindex = BPF_CORE_READ(dev, ifindex);
		t->netns = net_inum(BPF_CORE_READ(dev, nd_net.net));
	} else {
		t->netns = net_inum(BPF_CORE_READ(skb, sk, __sk_common.skc_net.net));
	}
	/* fields read straight into the tuple (wire layout of the headers):
	 * no header copy on the nearly full stack */
	unsigned char *ip = head + nh;

	if (!head || nh == 0xffff || bpf_probe_read_kernel(&vihl, 1, ip)) {
		t->flags |= TH_SOCK_READ_FAILED;
		return;
	}
	if (vihl >> 4 == 4) {
		t->family = TH_AF_INET;
		bpf_probe_read_kernel(&t->protocol, 1, ip + 9);          /* low byte: little endian */
		bpf_probe_read_kernel(t->saddr, 4, ip + 12);
		bpf_probe_read_kernel(t->daddr, 4, ip + 16);
		l4 = (vihl & 15) * 4;
	} else if (vihl >> 4 == 6) {
		t->family = TH_AF_INET6;
		bpf_probe_read_kernel(&t->protocol, 1, ip + 6);          /* next header: extension headers are not walked */
		bpf_probe_read_kernel(t->saddr, 16, ip + 8);
		bpf_probe_read_kernel(t->daddr, 16, ip + 24);
		l4 = 40;
	} else {
		return;
	}
	/* sport, dport: adjacent in the tuple as in the TCP/UDP/SCTP header */
	if (net_has_ports(t->protocol) && !bpf_probe_read_kernel(&t->sport, 4, ip + l4)) {
		t->sport = bpf_ntohs(t->sport);
		t->dport = bpf_ntohs(t->dport);
		t->flags |= TH_SOCK_HAS_PORTS;
	}
}

/* Fill a zeroed tuple from a network argument of the given kind; returns
 * a net_device's name length, its NUL counted (0 for the other kinds).  A
 * subprogram of its own (not inlined): its stack is not added to the frame
 * of the entry program, whose chain entry -> select_step -> walk_step must
 * stay within 512 bytes for 6.1's verifier. */
static __noinline __u32 net_read_arg(struct th_sock_tuple *t, __u8 kind, __u64 raw)
{
	switch (kind) {
	case TH_ARG_SOCK:
		net_read_sock(t, (struct sock *)raw);
		break;
	case TH_ARG_SOCKET:
		net_read_socket(t, (struct socket *)raw);
		break;
	case TH_ARG_SOCKADDR:
	case TH_ARG_SOCKADDR_USER:
		net_read_sockaddr(t, (const void *)raw, kind == TH_ARG_SOCKADDR_USER);
		break;
	case TH_ARG_SKB:
		net_read_skb(t, (struct sk_buff *)raw);
		break;
	case TH_ARG_NETDEV:
		return net_read_netdev(t, (struct net_device *)raw);
	}
	return 0;
}

/* ---- selectors on a tuple ----------------------------------------------- */

/* Is addr (16 bytes, family fam) inside prefix c?  An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d, a v6 socket talking IPv4) counts as IPv4. */
static __always_inline bool net_cidr_matches(const struct th_cidr *c, __u16 fam, const __u8 *addr)
{
	const __u32 *a = (const __u32 *)addr;
	const __u32 *want = (const __u32 *)c->addr;
	const __u32 *mask = (const __u32 *)c->mask;

	if (fam == TH_AF_INET6 && c->family == TH_AF_INET && a[0] == 0 && a[1] == 0 &&
	    a[2] == bpf_htonl(0xffff))
		return (a[3] & mask[0]) == want[0];
	if (c->family != fam)
		return false;
	return (a[0] & mask[0]) == want[0] && (a[1] & mask[1]) == want[1] &&
	       (a[2] & mask[2]) == want[2] && (a[3] & mask[3]) == want[3];
}

/* Does any value of matcher m hold for tuple t?  (Negation is the caller's.)
 * Called from one global function (net_arg_matches), so checked once. */
static __always_inline bool net_matches(const struct th_hook_config *cfg, const struct th_arg_matcher *m,
					const struct th_sock_tuple *t)
{
	__u8 op = m->op;
	bool ports = t->flags & TH_SOCK_HAS_PORTS;

	if (op == TH_MATCH_SPORT_PRIV)
		return ports && t->sport <= TH_PORT_PRIV_MAX;
	if (op == TH_MATCH_DPORT_PRIV)
		return ports && t->dport <= TH_PORT_PRIV_MAX;
	for (int j = 0; j < TH_MAX_INT_VALUES; j++) {
		if (j >= m->nvalues)
			break;
		__u64 v = m->values[j];

		if (op == TH_MATCH_SADDR || op == TH_MATCH_DADDR) {
			__u32 idx = v;

			BARRIER_MASK(idx, 31);         /* TH_MAX_CIDRS - 1 */
			if (net_cidr_matches(&cfg->cidrs[idx], t->family,
					     op == TH_MATCH_SADDR ? t->saddr : t->daddr))
				return true;
		} else if (op == TH_MATCH_SPORT || op == TH_MATCH_DPORT) {
			__u16 port = op == TH_MATCH_SPORT ? t->sport : t->dport;

			if (ports && port >= (v & 0xffff) && port <= ((v >> 16) & 0xffff))
				return true;
		} else if ((op == TH_MATCH_PROTOCOL && t->protocol == v) ||
			   (op == TH_MATCH_FAMILY && t->family == v) ||
			   (op == TH_MATCH_STATE && t->state == v)) {
			return true;
		}
	}
	return false;
}

#endif
