"""How many CPUs this process may run on: its affinity where the OS has one (a container or
``taskset`` may allow fewer than the machine has), else the machine's count."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):                # not on Linux
        return max(1, os.cpu_count() or 1)
