"""`fournil bake` end to end on the smoke recipe: the export works in `transformers`, the
model card tells the manifests' numbers, stages skip when up to date, and a bake killed in
the middle of pretraining finishes, when started again, with the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fournil.bake import bake
from fournil.core.stage import read_manifest
from fournil.model.transformer import Transformer
from fournil.recipe import apply_overrides
from fournil.stages import RunLayout

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "curate", "synth", "tokenizer", "tokens", "pretrain", "eval", "sft",
          "report", "export")


def _started(layout: RunLayout) -> dict:
    return {s: read_manifest(layout.root / s)["timings"]["started"] for s in STAGES}


def test_export_loads_in_transformers_with_the_same_logits(smoke_bake):
    summary, layout = smoke_bake
    export = Path(summary["export"])
    hf_tok = AutoTokenizer.from_pretrained(export)
    hf_model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    ours = Transformer.load(export).eval()
    ids = hf_tok("Il était une fois un roi qui avait trois filles.",
                 return_tensors="pt").input_ids
    assert ids[0, 0].item() == 0  # BOS as in training
    with torch.no_grad():
        diff = (hf_model(ids).logits - ours(ids)).abs().max().item()
    assert diff < 1e-4
    assert summary["sample"].strip() and summary["val_bpb"] > 0


def test_model_card_numbers_equal_the_manifests(smoke_bake):
    _, layout = smoke_bake
    card = (layout.export / "README.md").read_text()
    tokens = read_manifest(layout.tokens)["counts"]["train"]
    for source, c in tokens["by_source"].items():
        assert f"| {source} | {c['docs']} | {c['tokens']:,} |" in card
    for license_id, c in tokens["by_license"].items():
        assert f"| {license_id} | {c['docs']} | {c['tokens']:,} |" in card
    params = read_manifest(layout.export)["counts"]["parameters"]
    assert f"| parameters | {params:,} |" in card
    bpb = read_manifest(layout.eval)["counts"]["val_bpb"]
    assert f"**{bpb:.4f}**" in card
    config = json.loads((layout.export / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["architectures"] == ["Qwen3ForCausalLM"]


def test_post_training_is_exported_and_reported(smoke_bake):
    """smoke.toml names synth and sft: the export is the SFT's final checkpoint, the report
    compares it with the pretrained model on the synth stage's held-out pairs, and the card
    states the fine-tuning data and the scores from the manifests."""
    summary, layout = smoke_bake
    sft = read_manifest(layout.sft)
    assert read_manifest(layout.export)["checkpoint"] == str(layout.sft / sft["final_checkpoint"])
    report = read_manifest(layout.report)
    assert [r["model"] for r in report["results"]] == ["pretrain", "sft"]
    assert set(report["results"][0]["tasks"]) == {"bpb", "copy", "ocr", "rag"}
    # the stage key holds the tasks run (here the defaults), so new defaults re-run it
    assert report["params"]["tasks"] == ["bpb", "copy", "ocr", "rag"]
    assert summary["report"] and Path(summary["report"]).exists()
    card = (layout.export / "README.md").read_text()
    assert "## Post-training" in card
    c = sft["counts"]
    assert f"{c['kept']:,} of {c['read']:,} chats kept by data selection" in card
    for task, chats in sft["data"]["by_task"].items():
        assert f"| {task} | {chats} |" in card
    # by the source of each chat's seed document, as the smoke corpus's ids name them
    by_source = sft["data"]["by_source"]
    assert sum(by_source.values()) == sum(sft["data"]["by_task"].values())
    assert set(by_source) <= set(read_manifest(layout.tokens)["counts"]["train"]["by_source"])
    for source, chats in by_source.items():
        assert f"| {source} | {chats} |" in card
    cer_after = report["results"][1]["tasks"]["ocr"]["cer_after"]
    assert f"cer_after {cer_after:.4f}" in card


def test_synthetic_samples_pack_into_the_train_split_only(smoke_bake, tmp_path):
    """tokens.synth: the synth stage's train samples become documents of sources
    synth/<task> (their ChatML text, token for token), its eval samples stay out."""
    from fournil.core.shards import iter_records
    from fournil.recipe import RecipeError
    from fournil.synth.sample import sample_to_text
    from fournil.tokenizer.train import load_tokenizer
    from fournil.tokens.config import TokensConfig
    from fournil.tokens.shards import TokenDataset
    from fournil.tokens.stage import run_tokens

    _, layout = smoke_bake
    config = TokensConfig(synth=True)
    with pytest.raises(RecipeError, match="tokens.synth: no completed synth stage"):
        run_tokens(layout.curate, layout.tokenizer, tmp_path / "no", config,
                     synth_dir=tmp_path / "absent")
    counts = run_tokens(layout.curate, layout.tokenizer, tmp_path / "tokens", config,
                          synth_dir=layout.synth)["counts"]
    samples = list(iter_records(layout.synth / "samples"))
    for task in ("ocr", "rag"):
        train = [s for s in samples if s["task"] == task and s["split"] == "train"]
        assert counts["train"]["by_source"][f"synth/{task}"]["docs"] == len(train)
        assert f"synth/{task}" not in counts["val"]["by_source"]
    # the curated documents are packed as without synth
    plain = read_manifest(layout.tokens)["counts"]
    for source, c in plain["train"]["by_source"].items():
        assert counts["train"]["by_source"][source] == c
    tokens = TokenDataset(tmp_path / "tokens" / "train")
    index = tokens.documents().to_pylist()
    first = next(s for s in samples if s["split"] == "train")
    row = next(r for r in index if r["id"] == first["id"])
    text = load_tokenizer(layout.tokenizer).decode(
        tokens.read(row["start"], row["n_tokens"]).tolist(), skip_special_tokens=False)
    assert text.endswith(sample_to_text(first))


def test_second_bake_skips_everything_and_a_change_reruns_only_downstream(
        smoke_recipe, smoke_bake, tmp_path):
    summary, layout = smoke_bake
    before = _started(layout)
    again = bake(smoke_recipe, layout.root)
    assert _started(layout) == before
    assert again["val_bpb"] == summary["val_bpb"] and again["sample"] == summary["sample"]

    # a copy of the run with one more training step: only pretrain and what follows re-run
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(layout.root), str(copy)], check=True)
    longer = apply_overrides(smoke_recipe, [f"pretrain.max_steps="
                                            f"{smoke_recipe.pretrain.max_steps + 2}"])
    bake(longer, copy)
    after = _started(RunLayout(copy))
    assert all(after[s] == before[s] for s in ("ingest", "curate", "synth", "tokenizer",
                                               "tokens"))
    assert read_manifest(copy / "pretrain")["counts"]["steps"] == longer.pretrain.max_steps


def test_killed_bake_resumes_to_the_same_model(smoke_bake, tmp_path):
    summary, layout = smoke_bake
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fournil", "-q", "bake", str(ROOT / "recipes" / "smoke.toml"),
           "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "pretrain.partial" / "checkpoints" / "step-000010"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the bake never reached its first checkpoint"
    assert not (run_dir / "pretrain").exists() and not (run_dir / "export").exists()

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md"):
        assert (run_dir / "export" / name).read_bytes() == (layout.export / name).read_bytes()
    assert read_manifest(run_dir / "eval")["counts"] == read_manifest(layout.eval)["counts"]
