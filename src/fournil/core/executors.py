"""Where a stage's units of work run (curate's tasks, synth's chunks): local processes (the
default) or a Ray cluster; and the folder that lets an interrupted run redo only what is missing.

One interface: `executor.map(fn, tasks)` calls `fn(task)` for every task and returns the
results in task order, whatever order they finish in, with a progress bar over completed
tasks. `fn` must be picklable (a module-level function, or a `functools.partial` of one),
and a task should be a coarse unit (a shard, a few thousand rows): each one pays a round trip.

A task that raises stops the map: the pending tasks are cancelled and `TaskError` names the
failed task (its index and label, e.g. which shard and rows) with the original exception as
its cause, rather than a hang or a bare traceback from a worker.

    with make_executor("local", workers=0) as executor:   # 0: every core this process may use
        sigs = executor.map(partial(signatures, config=cfg), batches, labels=names)
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fournil.core.cores import available_cores
from fournil.core.stage import write_json_atomic


class TaskError(RuntimeError):
    """A task raised (or its worker died); the message names the task."""

    def __init__(self, index: int, label: str, cause: BaseException):
        self.index, self.label = index, label
        super().__init__(f"task {index} ({label}) failed: {type(cause).__name__}: {cause}")


def _label(task: Any) -> str:
    text = repr(task)
    return text if len(text) <= 80 else text[:77] + "..."


def _labels(tasks: Sequence, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [_label(t) for t in tasks]
    if len(labels) != len(tasks):
        raise ValueError(f"{len(labels)} labels for {len(tasks)} tasks")
    return list(labels)


class Executor(ABC):
    """Runs `fn` over tasks; use as a context manager so workers are released."""

    workers: int

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], tasks: Sequence, labels: Sequence[str] | None = None,
            desc: str = "tasks") -> list:
        """`fn(task)` for every task, results in task order."""

    def close(self) -> None:  # noqa: B027 - nothing to release unless a subclass holds workers
        """Release the workers (the local pool's processes; Ray leaves its cluster running)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """A pool of local worker processes; `workers=1` runs tasks inline (for debugging)."""

    def __init__(self, workers: int = 0):
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
        self.workers = workers or available_cores()
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process that already runs threads (tqdm's monitor,
            # torch's or Ray's) can deadlock the child
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map(self, fn: Callable[[Any], Any], tasks: Sequence, labels: Sequence[str] | None = None,
            desc: str = "tasks") -> list:
        names = _labels(tasks, labels)
        results: list = [None] * len(tasks)
        with tqdm(total=len(tasks), desc=desc, unit="task", mininterval=1.0) as bar:
            if self.workers == 1 or len(tasks) <= 1:
                for index, task in enumerate(tasks):
                    try:
                        results[index] = fn(task)
                    except Exception as e:
                        raise TaskError(index, names[index], e) from e
                    bar.update()
                return results
            pool = self._get_pool()
            futures = {pool.submit(fn, task): index for index, task in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    index = futures[future]
                    try:
                        results[index] = future.result()
                    except Exception as e:  # BrokenProcessPool too: a worker died on it
                        self._abort()
                        raise TaskError(index, names[index], e) from e
                    bar.update()
        return results

    def _abort(self) -> None:
        """Drop queued tasks; the workers exit once their current task ends."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray executor needs Ray: pip install 'fournil[ray]'") from None
    return ray


def _call(fn: Callable[[Any], Any], task: Any) -> Any:
    return fn(task)


class RayExecutor(Executor):
    """Tasks as Ray tasks: on the cluster at `address`, or on a local one started here.

    A cluster this executor started is shut down by `close()`; one that was already running
    (connected by someone else, or at `address`) is left alone. Worker output is not echoed
    (`log_to_driver=False`): failures come back as `TaskError`, logs stay in Ray's session.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        ray = _import_ray()
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:  # a new local cluster; a remote one has its own size
                options["num_cpus"] = num_cpus
            ray.init(address=address, ignore_reinit_error=True, **options)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(_call)

    def map(self, fn: Callable[[Any], Any], tasks: Sequence, labels: Sequence[str] | None = None,
            desc: str = "tasks") -> list:
        ray = self._ray
        names = _labels(tasks, labels)
        fn_ref = ray.put(fn)  # shipped once, not once per task
        refs = [self._remote.remote(fn_ref, task) for task in tasks]
        index_of = {ref: index for index, ref in enumerate(refs)}
        results: list = [None] * len(tasks)
        pending = list(refs)
        with tqdm(total=len(tasks), desc=desc, unit="task", mininterval=1.0) as bar:
            while pending:
                # whatever finished in the last moment; one ref per call would be quadratic
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                for ref in sorted(done, key=index_of.__getitem__):
                    index = index_of[ref]
                    try:
                        results[index] = ray.get(ref)
                    except Exception as e:
                        for other in pending:
                            ray.cancel(other)
                        cause = getattr(e, "cause", None) or e  # RayTaskError wraps the original
                        raise TaskError(index, names[index], cause) from e
                    bar.update()
        return results

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(name: str, workers: int = 0, ray_address: str | None = None) -> Executor:
    """`local` (worker processes; 0 = all cores) or `ray` (at `ray_address`, else local)."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address=ray_address, num_cpus=workers or None)
    raise ValueError(f"unknown executor {name!r} (local, ray)")


def resumable_dir(folder: Path, plan: object) -> Path:
    """The folder where a stage's units of work leave their outputs, each written whole (temp
    name, then rename) so that a unit's file exists only when the unit is done. An interrupted
    run's folder is kept only if it planned the same units (`plan`, kept as plan.json), so a
    restart redoes only the missing ones; any other is emptied."""
    plan = json.loads(json.dumps(plan))  # as it reads back: tuples are lists
    plan_file = folder / "plan.json"
    if folder.exists() and (not plan_file.exists()
                            or json.loads(plan_file.read_text()) != plan):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not plan_file.exists():
        write_json_atomic(plan_file, plan)
    return folder
