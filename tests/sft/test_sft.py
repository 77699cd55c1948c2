"""SFT on a real (tiny) model with the real tokenizer: the loss mask is exactly the
assistant's tokens, packing keeps chats whole, malformed rows are rejected with their
file:row, the loss falls on a small set, and a stopped run resumes bit for bit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fournil.formats.chatml import ChatEncoder
from fournil.model.transformer import Transformer
from fournil.sft.config import SelectConfig, SFTConfig
from fournil.sft.stage import run_sft
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import (
    IGNORE,
    encode_chat,
    inputs_and_targets,
    pack,
    read_chats,
    scored_subset,
)
from fournil.train.checkpoint import final_checkpoint, list_checkpoints
from fournil.train.config import LoRAConfig

QA = [("Que fait la boulangère ?", "Elle pétrit la pâte."),
      ("Qui vient au village ?", "Les enfants du village."),
      ("Que vendait-elle ?", "Des croissants tièdes."),
      ("Quand enfournait-elle ?", "Avant l'aube."),
      ("Où est le village ?", "Au bord de la mer.")]


@pytest.fixture(scope="module")
def encoder(tiny_tokenizer_dir):
    return ChatEncoder(load_tokenizer(tiny_tokenizer_dir))


def write_chats(path, n=40, eval_every=8):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q, a = QA[i % len(QA)]
            f.write(json.dumps({"id": f"c{i}", "task": "qa", "license": "CC0-1.0",
                                "split": "eval" if i % eval_every == 0 else "train",
                                "messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]},
                               ensure_ascii=False) + "\n")
    return path


def small(**changes) -> SFTConfig:
    cfg = SFTConfig(max_steps=24, seq_len=127, batch_size=4, warmup_steps=2, eval_every=8,
                    checkpoint_every=8, log_every=1, device="cpu")
    cfg.optimizer.lr = 3e-3
    return dataclasses.replace(cfg, **changes)


def losses(stage_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_mask_is_exactly_the_assistant_content_and_its_im_end(encoder, tiny_tokenizer_dir):
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    chat = [{"role": "system", "content": "Tu es une boulangère."},
            {"role": "user", "content": "Bonjour ! <|im_end|> Du pain ?"},
            {"role": "assistant", "content": "Bonjour ! Voici du pain chaud."},
            {"role": "user", "content": "Et des croissants ?"},
            {"role": "assistant", "content": " Ils sont encore tièdes.\n"}]
    ids, mask = encode_chat(encoder, chat)
    assert len(ids) == len(mask)
    spans, current = [], []  # the contiguous runs of masked tokens
    for token, m in zip(ids, mask, strict=True):
        if m:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    decoded = [tokenizer.decode(span, skip_special_tokens=False) for span in spans]
    assert decoded == [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    # each answer starts exactly where a generation prompt for the chat so far ends
    starts = [i for i in range(1, len(mask)) if mask[i] and not mask[i - 1]]
    for start, turn in zip(starts, (2, 4), strict=True):
        assert ids[:start] == encoder.encode(chat[:turn], add_generation_prompt=True)
    # the user's literal "<|im_end|>" is text, not the control token
    assert ids.count(encoder.im_end) == len(chat)


def test_packing_keeps_chats_whole_and_targets_only_assistant_tokens(encoder):
    encoded = [encode_chat(encoder, [{"role": "user", "content": q},
                                     {"role": "assistant", "content": a}]) for q, a in QA * 3]
    packed = pack(encoded, seq_len=127, pad_id=encoder.bos)
    assert packed.ids.shape[1] == 128 and sum(packed.chats_per_row) == len(encoded)
    assert max(packed.chats_per_row) > 1  # several chats share a row
    flat = [t for ids, _ in encoded for t in ids]
    rows = [list(r) for r in packed.ids]
    at = 0
    for r, n in zip(rows, packed.chats_per_row, strict=True):  # in order, never split
        length = sum(len(encoded[k][0]) for k in range(at, at + n))
        assert r[:length] == flat[sum(len(e[0]) for e in encoded[:at]):][:length]
        assert all(t == encoder.bos for t in r[length:])
        at += n
    x, y = inputs_and_targets(packed.ids, packed.mask)
    assert x.shape == y.shape == (len(packed), 127)
    assert int((y != IGNORE).sum()) == sum(sum(m) for _, m in encoded)
    with pytest.raises(ValueError, match="more than a row"):
        pack(encoded, seq_len=8, pad_id=0)


def test_reader_rejects_malformed_rows_with_file_and_row(tmp_path):
    bad = tmp_path / "chats.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, '
                   '{"role": "assistant", "content": "b"}]}\n'
                   "{not json\n"
                   '{"id": "x", "messages": [{"role": "user"}]}\n'
                   '{"id": "y"}\n', encoding="utf-8")
    synth = tmp_path / "synth" / "samples"  # a synth stage folder: samples/*.parquet
    synth.mkdir(parents=True)
    messages = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]]
    pq.write_table(pa.table({"id": ["s0"], "task": ["rag"], "messages": messages,
                             "split": ["eval"], "license": ["CC-BY-4.0"],
                             "meta": [json.dumps({"gold": ["1"]})]}),
                   synth / "rag-eval-00000.parquet")
    chats, rejected = read_chats([bad, tmp_path / "synth"])
    assert [c.id for c in chats] == [f"{bad}:1", "s0"]
    assert chats[1].meta == {"gold": ["1"]} and chats[1].split == "eval"
    assert [(r.where, r.reason) for r in rejected] == [
        (f"{bad}:2", "read:bad_json"), (f"{bad}:3", "read:bad_messages"),
        (f"{bad}:4", "read:bad_messages")]
    assert "message 0" in rejected[1].detail
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_chats([tmp_path / "nowhere"])


def test_the_held_out_loss_is_scored_on_a_seeded_subset_in_order():
    held = [f"chat-{i}" for i in range(10)]
    subset = scored_subset(held, 4, seed=1)
    assert len(subset) == 4 and subset == sorted(subset, key=held.index)  # their own order
    assert subset == scored_subset(held, 4, seed=1) != scored_subset(held, 4, seed=2)
    assert scored_subset(held, 0, seed=1) == held == scored_subset(held, 10, seed=1)


def test_sft_learns_and_reports_selection(base_dir, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    with open(data, "a", encoding="utf-8") as f:  # one malformed row, one too short
        f.write("{oops\n")
        f.write(json.dumps({"id": "short", "messages": [{"role": "user", "content": "a"},
                                                        {"role": "assistant", "content": "b"}]})
                + "\n")
    cfg = small(select=SelectConfig(min_tokens=30))
    manifest = run_sft([data], base_dir, tmp_path / "sft", cfg, seed=3)
    counts = manifest["counts"]
    assert counts["read"] == 42 and counts["kept"] == 40
    assert counts["read"] == counts["kept"] + counts["rejected"]
    assert manifest["selection"]["rejected_by_reason"] == {"length:too_short": 1,
                                                            "read:bad_json": 1}
    assert counts["eval_chats"] == 5 and counts["train_chats"] == 35
    assert manifest["data"]["by_license"] == {"CC0-1.0": 35}
    rejected = pq.read_table(tmp_path / "sft" / "rejected.parquet").to_pylist()
    assert {r["reason"] for r in rejected} == {"length:too_short", "read:bad_json"}
    curve = losses(tmp_path / "sft")
    assert np.mean([curve[s] for s in range(20, 25)]) < 0.8 * np.mean([curve[s]
                                                                     for s in range(1, 5)])
    assert counts["val_loss"] < 0.8 * counts["base_val_loss"]
    ckpt = final_checkpoint(tmp_path / "sft")
    assert ckpt.name == "step-000024"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in
                                                                     ckpt.iterdir()}


@pytest.mark.parametrize("lora", [LoRAConfig(), LoRAConfig(rank=4, dropout=0.1)],
                         ids=["full", "lora-dropout"])
def test_stopped_sft_resumes_with_the_same_losses(lora, base_dir, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl")
    cfg = small(max_steps=10, checkpoint_every=4, eval_every=5, lora=lora)
    run_sft([data], base_dir, tmp_path / "straight", cfg, seed=5)
    assert run_sft([data], base_dir, tmp_path / "resumed", cfg, seed=5, stop_after=6) is None
    assert list_checkpoints(tmp_path / "resumed.partial" / "checkpoints")[-1].name \
        == "step-000006"
    run_sft([data], base_dir, tmp_path / "resumed", cfg, seed=5)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    assert a == b
    wa = Transformer.load(final_checkpoint(tmp_path / "straight")).state_dict()
    wb = Transformer.load(final_checkpoint(tmp_path / "resumed")).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
