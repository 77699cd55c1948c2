"""Executors: local processes and a local Ray cluster compute the same thing, in task order,
and a failing task is named in the error instead of hanging the run."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fournil.core.executors import LocalExecutor, TaskError, make_executor
from fournil.curate.config import NearDedupConfig
from fournil.curate.minhash import find_duplicates, signatures
from fournil.curate.normalize import normalize_text

CONFIG = NearDedupConfig()
NOVELLAS = Path(__file__).resolve().parents[2] / "data/cligs-textbox-fr/nouvelles19"


def novella_batches(n_batches: int = 8, per_batch: int = 40) -> list[list[str]]:
    """Real paragraphs of the bundled novellas, in batches (a task each)."""
    paragraphs = []
    for path in sorted(NOVELLAS.glob("*.txt")):
        paragraphs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n")
                       if len(p.strip()) > 200]
    return [paragraphs[k:k + per_batch] for k in range(0, n_batches * per_batch, per_batch)]


@pytest.fixture(scope="module")
def batches():
    return novella_batches()


@pytest.fixture(scope="module")
def reference(batches):
    """Signatures computed inline, in this process."""
    with LocalExecutor(workers=1) as inline:
        sigs = np.vstack(inline.map(partial(signatures, config=CONFIG), batches))
    assert sigs.shape == (sum(map(len, batches)), CONFIG.num_perm)  # one row per text
    return sigs


def test_local_processes_match_inline(batches, reference):
    with LocalExecutor(workers=2) as pool:
        assert pool.workers == 2
        got = pool.map(partial(signatures, config=CONFIG), batches, desc="signatures")
        # the pool is kept between maps
        texts = pool.map(normalize_text, [b[0] for b in batches])
    assert np.array_equal(np.vstack(got), reference)
    assert texts == [normalize_text(b[0]) for b in batches]


def test_ray_matches_local(batches, reference, ray_executor):
    assert ray_executor.workers == 2
    got = ray_executor.map(partial(signatures, config=CONFIG), batches, desc="signatures")
    assert np.array_equal(np.vstack(got), reference)
    # and so the kept set is the same
    ids = [f"doc{i}" for i in range(len(reference))]
    assert find_duplicates(ids, np.vstack(got), CONFIG) == find_duplicates(ids, reference, CONFIG)


@pytest.mark.parametrize("kind", ["inline", "local", pytest.param("ray", marks=pytest.mark.ray)])
def test_failing_task_is_named(kind, batches, request):
    if kind == "ray":
        executor = request.getfixturevalue("ray_executor")
    else:
        executor = LocalExecutor(workers=1 if kind == "inline" else 2)
    tasks = [b[0] for b in batches[:3]] + [None] + [b[0] for b in batches[3:5]]
    labels = [f"shard part-00000 rows {100 * k}-{100 * k + 99}" for k in range(len(tasks))]
    with pytest.raises(TaskError, match=r"task 3 \(shard part-00000 rows 300-399\) failed: "
                                        r"TypeError") as caught:
        executor.map(normalize_text, tasks, labels=labels)
    assert caught.value.index == 3
    assert isinstance(caught.value.__cause__, Exception)
    # the executor is still usable after a failure
    assert executor.map(normalize_text, ["a\r\nb", " c ", "d"]) == ["a\nb", "c", "d"]
    if kind != "ray":
        executor.close()


def test_make_executor_and_bad_arguments():
    with make_executor("local", workers=0) as executor:
        assert executor.workers >= 1
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ValueError, match="2 labels for 1 tasks"):
        LocalExecutor(1).map(normalize_text, ["x"], labels=["a", "b"])
