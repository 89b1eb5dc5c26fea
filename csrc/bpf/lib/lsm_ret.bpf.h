/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * What a BPF-LSM program (or fmod_ret on a security_* function) may return:
 * 0 or a negative errno.  Verifiers from 6.12 on refuse an LSM program whose
 * return value they cannot prove is in [-MAX_ERRNO, 0] ("At program exit the
 * register R0 has smin=... should have been in [-4095, 0]"), and our
 * verdicts come from maps or from earlier programs, so every such program
 * returns through lsm_ret().
 *
 * The barrier keeps clang from folding the two tests into one unsigned range
 * check on a copy (whose bounds the verifier would not carry back to the
 * returned register); the 64-bit value keeps it from sign-extending again
 * between the tests, and keeps -EPERM negative in all of R0 (returned as an
 * int it would be 0xffffffff, which verifiers checking 64 bits refuse).  So
 * programs using it are declared to return long.
 */
#ifndef TH_LSM_RET_BPF_H
#define TH_LSM_RET_BPF_H

#define TH_MAX_ERRNO 4095

static __always_inline long lsm_ret(int verdict)
{
	__s64 v = verdict;

	barrier_var(v);
	if (v > 0)              /* not an errno: let the operation through */
		return 0;
	if (v < -TH_MAX_ERRNO)  /* not an errno either, but meant as a refusal */
		return -1;      /* -EPERM */
	return v;
}

#endif
