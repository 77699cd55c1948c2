"""Settings blocks that several stages' configs share (curate and synth both run their work on
an executor). Standard library only, like every config module."""

from __future__ import annotations

from dataclasses import dataclass

from fournil.core.validation import check

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorSettings:
    """Where a stage's units of work run: `local` processes (or, for synth, this process) or
    a Ray cluster. They change where the work runs, never its result, so they are left out of
    a stage's fingerprint (`RUN_SETTINGS`)."""

    executor: str = "local"
    workers: int = 0  # local processes, or the CPUs of a local Ray cluster; 0: all cores
    ray_address: str | None = None  # None: a local Ray; "auto" or host:port: a cluster

    def validate(self, key: str) -> None:
        check(self.executor in EXECUTORS, f"{key}.executor",
              f"{' or '.join(EXECUTORS)}, got {self.executor!r}")
        check(self.workers >= 0, f"{key}.workers", "must be >= 0 (0 = all cores)")


RUN_SETTINGS = ("executor", "workers", "ray_address")
