"""How many CPU cores this process may use: the one rule behind every default thread and
worker count (curation workers, `fournil serve`'s intra-op threads, llama.cpp's threads).

`os.cpu_count()` counts the host's cores, not the ones this process may run on: under
`taskset`, a container's CPU set or a scheduler's cgroup, defaults built on it oversubscribe
the cores the process really has, and oversubscribed CPU inference runs many times slower.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports one (Linux),
    else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
