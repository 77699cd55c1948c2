from pathlib import Path

import pytest

from fournil.bake import bake
from fournil.layout import RunLayout
from fournil.recipe import load_recipe
from fournil.tokenizer.train import save_tokenizer, train_tokenizer

FRENCH = [
    "Il était une fois, dans un petit village au bord de la mer, une boulangère.",
    "Chaque matin, elle pétrissait la pâte et enfournait le pain avant l'aube.",
    "Les enfants du village venaient acheter des croissants encore tièdes.",
    "« Bonjour ! » disait-elle, et l'odeur du pain chaud emplissait la rue.",
] * 10


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A real fournil tokenizer (tokenizer.json + tokenizer_config.json), trained on a few
    sentences: special tokens <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2, BOS prepended."""
    tok = train_tokenizer(FRENCH, vocab_size=320, min_frequency=1, show_progress=False)
    directory = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tok, directory, max_length=64)
    return directory


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_recipe():
    return load_recipe(ROOT / "recipes" / "smoke.toml")


@pytest.fixture(scope="session")
def smoke_bake(smoke_recipe, tmp_path_factory):
    """The smoke recipe baked once, uninterrupted: (summary, layout)."""
    run_dir = tmp_path_factory.mktemp("smoke-run")
    summary = bake(smoke_recipe, run_dir)
    return summary, RunLayout(run_dir)


@pytest.fixture(scope="session")
def ray_executor():
    """One local Ray cluster of 2 CPUs for the session; executors made while it runs join
    it (and leave it running), as `fournil curate --executor ray` joins a cluster."""
    pytest.importorskip("ray")  # a guard only: CI installs the ray extra
    from fournil.curate.executors import RayExecutor

    executor = RayExecutor(num_cpus=2)
    yield executor
    executor.close()
