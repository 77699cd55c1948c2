"""Stage bookkeeping: a stage's output appears only complete, is skipped when its inputs and
parameters are unchanged, resumes only a partial run of the same key; and `mismatches`, the
check of a manifest against its TypedDict, names every key that differs."""

from __future__ import annotations

from typing import TypedDict

import pytest

from fournil.core.stage import Stage, hash_tree, mismatches, read_manifest, upstream_hash


def test_output_is_visible_only_when_finished_and_skipped_when_unchanged(tmp_path):
    out = tmp_path / "curate"
    stage = Stage("curate", out, inputs={"ingest": "abc"}, params={"min_chars": 200})
    assert stage.done() is None
    work = stage.start()
    (work / "part-0.txt").write_text("kept")
    assert work.name == "curate.partial" and not out.exists()
    manifest = stage.finish({"kept": 1}, executor="local")
    assert not work.exists() and (out / "part-0.txt").read_text() == "kept"
    assert read_manifest(out) == manifest
    assert manifest["counts"] == {"kept": 1} and manifest["executor"] == "local"
    assert manifest["output_hash"] == hash_tree(out) == upstream_hash(out)

    same = Stage("curate", out, inputs={"ingest": "abc"}, params={"min_chars": 200})
    assert same.done() == manifest
    assert Stage("curate", out, inputs={"ingest": "abc"}, params={"min_chars": 100}).done() is None
    assert Stage("curate", out, inputs={"ingest": "xyz"}, params={"min_chars": 200}).done() is None


def test_a_partial_run_is_resumed_only_under_the_same_key(tmp_path):
    out = tmp_path / "synth"
    first = Stage("synth", out, inputs={}, params={"seed": 1})
    (first.start(resume=True) / "chunk-0").write_text("done")
    again = Stage("synth", out, inputs={}, params={"seed": 1})
    assert (again.start(resume=True) / "chunk-0").exists()  # resumed
    assert not (again.start() / "chunk-0").exists()  # without resume: from scratch
    (again.start(resume=True) / "chunk-0").write_text("done")
    other = Stage("synth", out, inputs={}, params={"seed": 2})
    assert not (other.start(resume=True) / "chunk-0").exists()  # another key: cleared


def test_a_missing_upstream_stage_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'ingest'}: no manifest.json"):
        upstream_hash(tmp_path / "ingest")


class Tally(TypedDict):
    read: int
    share: float
    by_source: dict[str, int]
    names: list[str]
    checkpoint: str | None


class Counts(Tally, total=False):
    note: str  # written only sometimes


GOOD = {"read": 3, "share": 0.5, "by_source": {"a": 1, "b": 2}, "names": ["x", "y"],
        "checkpoint": None}


def test_a_conforming_value_has_no_mismatch():
    assert mismatches(GOOD, Counts) == []
    assert mismatches({**GOOD, "share": 1, "checkpoint": "step-10", "extra": []}, Counts) == []
    assert mismatches({**GOOD, "note": "resumed"}, Counts) == []


@pytest.mark.parametrize("change, problem", [
    ({"read": None}, "manifest.read: expected int, got None"),
    ({"read": True}, "manifest.read: expected int, got True"),  # a bool is no count
    ({"read": 3.0}, "manifest.read: expected int, got 3.0"),
    ({"share": "half"}, "manifest.share: expected float, got 'half'"),
    ({"by_source": {"a": 1, "b": "2"}}, "manifest.by_source.b: expected int, got '2'"),
    ({"by_source": [1, 2]}, "manifest.by_source: expected an object, got list"),
    ({"names": ["x", 3]}, "manifest.names[1]: expected str, got 3"),
    ({"checkpoint": 10}, "manifest.checkpoint: int is none of str | None"),
    ({"note": 1}, "manifest.note: expected str, got 1"),
])
def test_each_difference_is_named(change, problem):
    assert mismatches({**GOOD, **change}, Counts) == [problem]


def test_missing_keys_and_a_non_object():
    without = {k: v for k, v in GOOD.items() if k not in ("read", "names")}
    assert mismatches(without, Counts) == ["manifest.names: missing", "manifest.read: missing"]
    assert mismatches([GOOD], Counts, "counts") == ["counts: expected an object, got list"]
