"""The open-file budget the agent needs, raised at start."""
from __future__ import annotations

import logging
import resource

log = logging.getLogger("tetrahost.daemon")     # the agent's start-up lines

# Each hook holds a few fds (programs, maps, links, perf events); the budget
# must cover max_hooks_total of them with room for sockets and exporters.
WANTED_NOFILE = 65536


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one (a plain shell's 1024
    runs out with a few hundred hooks) and log the budget; the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(hard, WANTED_NOFILE)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
    level = logging.WARNING if soft < 4096 else logging.INFO
    log.log(level, "open file limit: %s (hard %s)%s", soft, hard,
            "; low: loads may fail with EMFILE (set LimitNOFILE=)" if level == logging.WARNING else "")
    return soft
