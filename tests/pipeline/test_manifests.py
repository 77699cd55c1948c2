"""Every stage's manifest.json is what its type says: the return type of the stage's
`run(ctx)` (a TypedDict beside the code that counts) is checked against the manifest the
smoke bake really wrote, so a count renamed in one place and not the other fails here, not
when the model card reads it at export time."""

from __future__ import annotations

import copy
import importlib
import types
import typing
from pathlib import Path

import pytest

from fournil.core.stage import Manifest, mismatches, read_manifest
from fournil.export.ai_act import RunManifests
from fournil.recipe import load_recipe
from fournil.stages import STAGES, StageSpec

ROOT = Path(__file__).resolve().parents[2]
SMOKE_RAN = [s for s in STAGES if load_recipe(ROOT / "recipes" / "smoke.toml").runs(s.name)]


def manifest_type(spec: StageSpec) -> type:
    """The type `run` declares it returns, without the `None` of a stage stopped early."""
    declared = typing.get_type_hints(importlib.import_module(spec.module).run)["return"]
    if typing.get_origin(declared) in (typing.Union, types.UnionType):
        [declared] = [a for a in typing.get_args(declared) if a is not type(None)]
    return declared


@pytest.mark.parametrize("spec", STAGES, ids=lambda s: s.name)
def test_every_stage_declares_a_typed_manifest(spec):
    declared = manifest_type(spec)
    assert typing.is_typeddict(declared) and issubclass(declared, dict), declared
    # what every manifest holds (key, inputs, timings, ...) plus the stage's own counts
    assert set(typing.get_type_hints(Manifest)) | {"counts"} <= set(
        typing.get_type_hints(declared)), declared


def test_design_lists_every_stages_manifest():
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    table = design[design.index("## Manifests"):]
    assert [s.name for s in STAGES if f"\n| {s.name} | " not in table] == []


@pytest.mark.parametrize("spec", SMOKE_RAN, ids=lambda s: s.name)
def test_the_real_manifest_conforms_to_its_type(spec, smoke_bake):
    _, layout = smoke_bake
    manifest = read_manifest(layout.path(spec.name))
    assert manifest is not None and manifest["stage"] == spec.name
    assert mismatches(manifest, manifest_type(spec)) == []


def run_manifests(layout) -> dict:
    """What the export stage gives the model card: the manifest of each stage the run ran."""
    return {name: read_manifest(layout.path(name)) for name in typing.get_type_hints(RunManifests)
            if layout.path(name).exists()}


def test_the_card_reads_the_manifests_through_their_types(smoke_bake):
    manifests = run_manifests(smoke_bake[1])
    assert set(RunManifests.__required_keys__) <= set(manifests)
    assert {"synth", "sft", "report"} <= set(manifests)  # smoke.toml post-trains
    assert mismatches(manifests, RunManifests) == []


def test_a_renamed_or_retyped_count_is_a_mismatch(smoke_bake):
    _, layout = smoke_bake
    curate = read_manifest(layout.curate)
    declared = manifest_type(next(s for s in STAGES if s.name == "curate"))
    renamed = copy.deepcopy(curate)
    renamed["counts"]["kept_docs"] = renamed["counts"].pop("kept")
    assert mismatches(renamed, declared) == ["manifest.counts.kept: missing"]
    retyped = copy.deepcopy(curate)
    retyped["counts"]["by_source"][next(iter(retyped["counts"]["by_source"]))]["read"] = "12"
    [problem] = mismatches(retyped, declared)
    assert problem.startswith("manifest.counts.by_source.") and "expected int, got '12'" in problem
    manifests = copy.deepcopy(run_manifests(layout))
    del manifests["pretrain"]["training"]["optimizer"]
    assert mismatches(manifests, RunManifests) == ["manifest.pretrain.training.optimizer: missing"]
