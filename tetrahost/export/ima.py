"""imaHash: the digest the kernel's IMA gave a hook event, as Tetragon's
ProcessLsm.ima_hash renders it: "<algorithm>:<hex digest>" ("sha256:9f86...").

The kernel reports the algorithm as its enum hash_algo
(include/uapi/linux/hash_info.h); the digest's length follows from it.
"""
from __future__ import annotations

# enum hash_algo: (name as the kernel's hash_algo_name spells it, digest bytes)
HASH_ALGOS = {
    0: ("md4", 16), 1: ("md5", 16), 2: ("sha1", 20), 3: ("rmd160", 20), 4: ("sha256", 32),
    5: ("sha384", 48), 6: ("sha512", 64), 7: ("sha224", 28), 8: ("rmd128", 16), 9: ("rmd256", 32),
    10: ("rmd320", 40), 11: ("wp256", 32), 12: ("wp384", 48), 13: ("wp512", 64), 14: ("tgr128", 16),
    15: ("tgr160", 20), 16: ("tgr192", 24), 17: ("sm3", 32), 18: ("streebog256", 32),
    19: ("streebog512", 64),
}


def ima_hash_text(algo: int, digest: bytes) -> str:
    """"" when the event carries no hash (algo < 0: not asked, or IMA gave none)."""
    if algo < 0:
        return ""
    name, size = HASH_ALGOS.get(algo, (f"algo{algo}", len(digest)))
    return f"{name}:{digest[:size].hex()}"
