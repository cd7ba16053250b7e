"""Process limits: thousands of sockets need more open files than the usual 1,024."""

from __future__ import annotations

import resource

__all__ = ["raise_nofile"]

# With an unlimited hard limit the kernel still caps descriptors (fs.nr_open).
_CEILING = 1 << 20


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to its hard limit (children inherit
    it); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)
