"""Data mixtures with phases on token shards made by the real stages from bundled documents:
weights followed per phase, windows that never leave their source (even a source split in
two spans of the stream), the same windows for any world size and on resume, closed-form
token counts, phase boundaries on WSD's decay, and recipe errors that name the key."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from fournil.curate.config import CurateConfig
from fournil.ingest.config import SourceSpec
from fournil.pretrain.stage import run_pretrain
from fournil.recipe import RecipeError, _convert
from fournil.tokenizer.config import TokenizerConfig
from fournil.tokens.config import MixtureConfig, PhaseConfig, integer_weights
from fournil.tokens.loader import WindowSampler, get_batch
from fournil.tokens.mixture import Cycle, MixtureSampler, phase_steps, source_spans, tokens_seen
from fournil.tokens.shards import TokenDataset
from fournil.train.schedule import decay_start

NOUVELLES, WIKI, THEATRE = ("cligs-textbox/nouvelles19", "wikipedia-fr",
                            "cligs-textbox/theatre17")
SEQ = 64


@pytest.fixture(scope="module")
def train(data_stages, tmp_path_factory) -> TokenDataset:
    """Train tokens of three real sources; the novellas come in two ingest entries around the
    Wikipedia articles, so their documents form two spans of the stream. (Paths are in the
    bundled data/ folder.)"""

    def nouvelle(name: str) -> SourceSpec:
        return SourceSpec(path=f"cligs-textbox-fr/nouvelles19/{name}", name=NOUVELLES,
                          license="domaine public")

    specs = [nouvelle("nd0058.txt"), nouvelle("nd0126.txt"),
             SourceSpec(path="wikipedia-fr-sample"),
             nouvelle("nd0101.txt"), nouvelle("nd0028.txt"),
             SourceSpec(path="cligs-textbox-fr/theatre17/Boyer_Agamemnon_tc0146.txt",
                        name=THEATRE, license="domaine public")]
    layout = data_stages(specs, tmp_path_factory.mktemp("mixture"), until="tokens",
                         curate=CurateConfig(workers=1), tokenizer=TokenizerConfig(vocab_size=512))
    data = TokenDataset(layout.tokens / "train")
    spans = source_spans(data.documents())
    assert set(spans) == {NOUVELLES, WIKI, THEATRE} and len(spans[NOUVELLES]) == 2
    return data


MIXTURE = MixtureConfig(phases=[
    PhaseConfig(name="main", until=0.75, weights={NOUVELLES: 3, THEATRE: 1}),
    PhaseConfig(name="anneal", until=1.0, weights={WIKI: 0.5, NOUVELLES: 0.25, THEATRE: 0}),
])
STEPS, PER_STEP = 40, 8  # main: steps 0-29, anneal: 30-39


def _sampler(train: TokenDataset, mixture: MixtureConfig = MIXTURE, seed: int = 5):
    return MixtureSampler(train, SEQ, seed, mixture, STEPS, PER_STEP)


def _token_sources(train: TokenDataset) -> np.ndarray:
    """The source of every token of the train stream, from the document index."""
    docs = train.documents().to_pylist()
    names = sorted({d["source"] for d in docs})
    owner = np.full(len(train), -1)
    for d in docs:
        owner[d["start"]: d["start"] + d["n_tokens"]] = names.index(d["source"])
    assert (owner >= 0).all()  # the documents tile the stream
    return np.array(names)[owner]


def test_every_step_holds_the_phase_mix(train):
    sampler = _sampler(train)
    for step in range(STEPS + 5):  # and past max_steps: the last phase goes on
        indices = range(step * PER_STEP, (step + 1) * PER_STEP)
        sources = [sampler.source_of(i) for i in indices]
        phase = "main" if step < 30 else "anneal"
        assert {sampler.phase_of(i) for i in indices} == {phase}
        # cycles of 4 (3 : 1) and 3 (2 : 1 : 0) samples: exact per step or within one
        expected = ({NOUVELLES: 6, THEATRE: 2} if phase == "main"
                    else {WIKI: 16 / 3, NOUVELLES: 8 / 3})
        for source in (NOUVELLES, THEATRE, WIKI):
            assert abs(sources.count(source) - expected.get(source, 0)) < 1, (step, source)


def test_cycle_counts_stay_within_one_of_the_exact_share():
    rng = np.random.default_rng(0)
    for _ in range(50):
        weights = {f"s{i}": int(w) for i, w in enumerate(rng.integers(0, 40, rng.integers(2, 6)))}
        weights["s0"] += 1
        cycle = Cycle(weights)
        total = sum(weights.values())
        seen = dict.fromkeys(range(len(cycle.names)), 0)
        for j in range(3 * cycle.period):
            for s, name in enumerate(cycle.names):
                assert cycle.count(j, s) == seen[s]  # closed form == enumeration
                assert abs(seen[s] - j * weights[name] / total) < 1
            seen[cycle.source(j)] += 1


def test_windows_stay_inside_their_source(train):
    sampler, owner = _sampler(train), _token_sources(train)
    split, novellas = 0, 0
    for i in range(STEPS * PER_STEP * 8):
        source, pieces = sampler.source_of(i), sampler.window(i)
        novellas += source == NOUVELLES
        assert sum(n for _, n in pieces) == SEQ + 1
        positions = np.concatenate([np.arange(a, a + n) for a, n in pieces])
        assert set(owner[positions]) == {source}, i
        tokens = sampler.read(train, i)
        assert np.array_equal(tokens, np.concatenate([train.read(a, n) for a, n in pieces]))
        split += len(pieces) > 1
    # over a whole epoch of the novellas' stream, one window joins its two spans
    assert novellas > sampler.streams[NOUVELLES].windows.windows_per_epoch
    assert split > 0


def test_one_source_epoch_visits_distinct_windows(train):
    only = MixtureConfig(phases=[PhaseConfig(name="all", weights={WIKI: 1})])
    sampler = _sampler(train, only)
    n_wiki = sum(b - a for a, b in source_spans(train.documents())[WIKI])
    per_epoch = (n_wiki - 1 - (SEQ - 1)) // SEQ
    starts = [sampler.window(i)[0][0] for i in range(per_epoch)]
    assert len(set(starts)) == per_epoch  # an epoch is a permutation, no window twice


def test_same_windows_for_any_world_size_and_on_resume(train):
    n = 30 * PER_STEP + 3 * PER_STEP  # across the phase boundary
    single = _sampler(train)
    reference = [single.window(i) for i in range(n)]
    for world in (2, 3, 8):
        got = {}
        for rank in range(world):
            ranked = _sampler(train)  # each process builds its own sampler
            got.update({i: ranked.window(i) for i in range(rank, n, world)})
        assert [got[i] for i in range(n)] == reference, world
    resumed = _sampler(train)  # a resumed run starts mid-stream, with a fresh sampler
    assert [resumed.window(i) for i in range(n - 1, 99, -1)] == reference[100:][::-1]
    x1, y1 = get_batch(train, single, 200, 4)
    x2, y2 = get_batch(train, resumed, 200, 4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1[:, 1:], y1[:, :-1])
    assert [_sampler(train, seed=6).window(i) for i in range(n)] != reference


@pytest.mark.parametrize("upto_step", [0, 1, 7, 29, 30, 33, STEPS, STEPS + 6])
def test_tokens_seen_equals_enumeration(train, upto_step):
    sampler = _sampler(train)
    counted = {"main": {NOUVELLES: 0, THEATRE: 0},
               "anneal": {WIKI: 0, NOUVELLES: 0, THEATRE: 0}}
    for i in range(upto_step * PER_STEP):
        counted[sampler.phase_of(i)][sampler.source_of(i)] += SEQ
    assert tokens_seen(MIXTURE, STEPS, PER_STEP, SEQ, upto_step) == counted


def test_until_one_minus_decay_fraction_starts_the_last_phase_on_the_decay():
    # every decay fraction with two decimals: 1 - until is not always decay_fraction in
    # floats (15 steps, 0.1; 25 steps, 0.18, ...), the boundary must still match
    for max_steps in (7, 10, 15, 25, 30, 99, 1000):
        for decay in (k / 100 for k in range(1, 100)):
            mixture = MixtureConfig(phases=[
                PhaseConfig(name="stable", until=round(1 - decay, 10), weights={"a": 1}),
                PhaseConfig(name="decay", weights={"b": 1})])
            mixture.validate("pretrain.mixture")
            steps = phase_steps(mixture, max_steps)
            assert steps["decay"] == (decay_start(max_steps, decay), max_steps), (max_steps, decay)
            assert steps["stable"] == (0, steps["decay"][0])


def test_no_phases_is_the_natural_distribution(train):
    sampler = _sampler(train, MixtureConfig())
    natural = WindowSampler(len(train), SEQ, 5)
    for first in (0, 96, 4000):
        x1, y1 = get_batch(train, sampler, first, 4)
        x2, y2 = get_batch(train, natural, first, 4)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    owner = _token_sources(train)
    assert all(sampler.source_of(i) == owner[natural.start(i)] for i in range(200))
    assert sampler.phase_of(0) is None
    assert tokens_seen(MixtureConfig(), STEPS, PER_STEP, SEQ, STEPS) == {}


def test_the_recipe_loader_builds_a_mixture():
    toml = {"phases": [
        {"name": "main", "until": 0.8, "weights": {NOUVELLES: 3, WIKI: 1}},
        {"name": "anneal", "weights": {WIKI: 2, THEATRE: 0.5}}]}
    mixture = _convert(toml, MixtureConfig, "pretrain.mixture")
    mixture.validate("pretrain.mixture")
    assert mixture.phases[1] == PhaseConfig(name="anneal", until=1.0,
                                            weights={WIKI: 2.0, THEATRE: 0.5})
    with pytest.raises(RecipeError, match=r"pretrain\.mixture\.phases\[0\]\.weights\.wikipedia"
                                          r"-fr: expected a number"):
        _convert({"phases": [{"name": "x", "weights": {WIKI: "lots"}}]}, MixtureConfig,
                 "pretrain.mixture")


def _phase(name: str = "p", until: float = 1.0, **weights: float) -> PhaseConfig:
    return PhaseConfig(name=name, until=until, weights=weights or {"a": 1})


@pytest.mark.parametrize("phases, key, message", [
    ([_phase(until=0.5)], "phases[0].until", "last phase must end at 1.0"),
    ([_phase("a", 0.6), _phase("b", 0.4), _phase("c")], "phases[1].until", "must be > the"),
    ([_phase(until=0)], "phases[0].until", r"must be in \(0, 1\]"),
    ([_phase("a", 0.5), _phase("a")], "phases[1].name", "named twice"),
    ([_phase(" ")], "phases[0].name", "must not be empty"),
    ([PhaseConfig(name="p", weights={})], "phases[0].weights", "at least one source"),
    ([_phase(a=1, b=-2)], "phases[0].weights.b", "must be >= 0"),
    ([_phase(a=0, b=0)], "phases[0].weights", "at least one weight must be > 0"),
    ([_phase(a=1, b=float("nan"))], "phases[0].weights.b", "must be >= 0"),
    ([_phase(a=1, b=1e-9)], "phases[0].weights.b", "too small"),
    ([_phase(a=1, b=0.123457)], "phases[0].weights", "repeat only every"),
])
def test_bad_mixtures_name_the_key(phases, key, message):
    with pytest.raises(RecipeError, match=re.escape(f"pretrain.mixture.{key}: ") + ".*" + message):
        MixtureConfig(phases=phases).validate("pretrain.mixture")


def test_weights_are_kept_in_their_ratios():
    assert Cycle({"a": 7, "b": 3}).period == 10
    assert integer_weights({"a": 0.7, "b": 0.3}, "k") == {"a": 7, "b": 3}
    assert integer_weights({"a": 70, "b": 20, "c": 10, "d": 0}, "k") == {"a": 7, "b": 2, "c": 1,
                                                                        "d": 0}
    assert integer_weights({"a": 1 / 3, "b": 2 / 3}, "k") == {"a": 1, "b": 2}


def test_sources_must_be_in_the_train_tokens(train):
    missing = MixtureConfig(phases=[_phase("main", 0.5, **{WIKI: 1}),
                                    _phase("anneal", **{"etalab/rgaa-methodologie": 1})])
    with pytest.raises(RecipeError) as e:
        _sampler(train, missing)
    assert str(e.value) == (
        "pretrain.mixture.phases[1].weights.etalab/rgaa-methodologie: no source "
        f"'etalab/rgaa-methodologie' in the train tokens; present: {NOUVELLES}, {THEATRE}, "
        f"{WIKI}")
    too_long = MixtureConfig(phases=[_phase(**{WIKI: 1})])
    with pytest.raises(RecipeError, match=f"mixture.phases: source .{WIKI}. has .* too few"):
        MixtureSampler(train, 8000, 0, too_long, STEPS, PER_STEP)


def test_pretrain_reports_tokens_seen_per_phase_and_source(smoke_recipe, smoke_bake, tmp_path):
    """The real pretrain stage under a two-phase mixture: the manifest's tokens per phase and
    source are the allocation's, and the natural run reports its sources too."""
    _, layout = smoke_bake
    mixture = MixtureConfig(phases=[
        PhaseConfig(name="main", until=0.5, weights={NOUVELLES: 3, THEATRE: 1}),
        PhaseConfig(name="anneal", weights={WIKI: 1, NOUVELLES: 1})])
    cfg = dataclasses.replace(smoke_recipe.pretrain, max_steps=8, eval_every=8, batch_size=4,
                              grad_accum=2, log_every=1, mixture=mixture)
    manifest = run_pretrain(layout.tokens, layout.tokenizer, tmp_path / "mixed",
                            smoke_recipe.model, cfg, seed=1)
    seen = manifest["mixture"]["tokens_seen"]
    assert {k: tuple(v) for k, v in manifest["mixture"]["phases"].items()} == {
        "main": (0, 4), "anneal": (4, 8)}
    per_sample = cfg.seq_len
    assert seen == {"main": {NOUVELLES: 24 * per_sample, THEATRE: 8 * per_sample},
                    "anneal": {WIKI: 16 * per_sample, NOUVELLES: 16 * per_sample}}
    assert sum(n for phase in seen.values() for n in phase.values()) \
        == manifest["counts"]["tokens_seen"]
    rows = [json.loads(line) for line in
            (tmp_path / "mixed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows if "loss" in r] == ["main"] * 4 + ["anneal"] * 4
    natural = json.loads((layout.pretrain / "manifest.json").read_text())
    by_source = natural["mixture"]["tokens_seen"]["natural"]
    assert set(by_source) <= {NOUVELLES, THEATRE, WIKI, "etalab/rgaa-methodologie"}
    assert sum(by_source.values()) == natural["counts"]["tokens_seen"]
