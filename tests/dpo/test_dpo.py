"""DPO on a real (tiny) model: the loss is the sigmoid DPO loss against the frozen base, it
falls and the chosen/rejected margin grows on a few pairs, log-probs cover the answers only,
malformed or unusable pairs are rejected with a reason, and a stopped run resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from fournil.dpo.config import DPOConfig
from fournil.dpo.stage import answer_logps, dpo_loss, read_pairs, run_dpo
from fournil.formats.chatml import ChatEncoder
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import encode_response
from fournil.train.checkpoint import final_checkpoint

PAIRS = [("Que fait la boulangère ?", "Elle pétrit la pâte.", "Elle dort."),
         ("Qui vient au village ?", "Les enfants du village.", "Personne."),
         ("Que vendait-elle ?", "Des croissants tièdes.", "Des chaussures."),
         ("Quand enfournait-elle ?", "Avant l'aube.", "Jamais.")]


def write_pairs(path):
    with open(path, "w", encoding="utf-8") as f:
        for i, (prompt, chosen, rejected) in enumerate(PAIRS):
            # prompts as text and as messages, answers as text and as messages
            row = {"id": f"p{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected}
            if i % 2:
                row["prompt"] = [{"role": "user", "content": prompt}]
                row["chosen"] = [*row["prompt"], {"role": "assistant", "content": chosen}]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def small(**changes) -> DPOConfig:
    cfg = DPOConfig(max_steps=25, seq_len=127, batch_size=4, warmup_steps=2, eval_every=25,
                    checkpoint_every=25, log_every=1, eval_fraction=0.0, device="cpu")
    cfg.optimizer.lr = 1e-3
    return dataclasses.replace(cfg, **changes)


def metrics(stage_dir) -> dict[int, dict]:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "loss" in r}


def test_dpo_loss_matches_its_formula():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -4.0])
    losses, rewards = dpo_loss(pc, pr, rc, rr, beta=0.5)
    expected = [-math.log(1 / (1 + math.exp(-0.5 * ((pc[i] - rc[i]) - (pr[i] - rr[i])))))
                for i in range(2)]
    torch.testing.assert_close(losses, torch.tensor(expected))
    torch.testing.assert_close(rewards["chosen"], 0.5 * (pc - rc))
    torch.testing.assert_close(dpo_loss(pc, pr, pc, pr, beta=0.1)[0],
                               torch.full((2,), math.log(2)))  # policy == reference


def test_answer_logps_sum_over_the_answer_only(base_dir):
    encoder = ChatEncoder(load_tokenizer(base_dir))
    model = Transformer.load(base_dir).eval()
    prompt = [{"role": "user", "content": "Bonjour ?"}]
    ids, mask = encode_response(encoder, prompt, "Du pain.")
    with torch.no_grad():
        got = answer_logps(model, [(ids, mask)], encoder.bos, torch.device("cpu"))[0]
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])), -1)[0]
    expected = sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if mask[t])
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert sum(mask) == len(encode_response(encoder, prompt, "Du pain.")[0]) - len(
        encoder.encode(prompt)) - 1  # the answer and <|im_end|>, not the trailing newline


def test_dpo_loss_falls_and_the_margin_grows(base_dir, tmp_path):
    manifest = run_dpo([write_pairs(tmp_path / "pairs.jsonl")], base_dir, tmp_path / "dpo",
                       small(), seed=0)
    m = metrics(tmp_path / "dpo")
    assert m[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1: policy == reference
    assert m[1]["margin"] == pytest.approx(0.0, abs=1e-5)
    assert m[25]["loss"] < 0.5 * m[1]["loss"]
    assert m[25]["margin"] > 1.0 and m[25]["accuracy"] == 1.0
    assert m[25]["reward_chosen"] > m[25]["reward_rejected"]
    assert manifest["counts"]["train_pairs"] == 4 and manifest["counts"]["rejected"] == 0
    assert final_checkpoint(tmp_path / "dpo").name == "step-000025"


def test_unusable_pairs_are_rejected_with_a_reason(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}),
        "[1, 2]",
        json.dumps({"prompt": 3, "chosen": "a", "rejected": "b"}),
        json.dumps({"prompt": "q", "chosen": [{"role": "user", "content": "a"}],
                    "rejected": "b"}),
    ]) + "\n", encoding="utf-8")
    pairs, rejected = read_pairs([path])
    assert len(pairs) == 1 and pairs[0].prompt == [{"role": "user", "content": "q"}]
    assert [(r.where, r.reason) for r in rejected] == [
        (f"{path}:2", "read:bad_json"), (f"{path}:3", "read:bad_prompt"),
        (f"{path}:4", "read:bad_answer")]


def test_dpo_rejects_identical_and_too_long_pairs(base_dir, tmp_path):
    path = write_pairs(tmp_path / "pairs.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "q", "chosen": "Oui.", "rejected": " Oui. "}) + "\n")
        f.write(json.dumps({"prompt": "q " * 200, "chosen": "a", "rejected": "b"}) + "\n")
    manifest = run_dpo([path], base_dir, tmp_path / "dpo", small(max_steps=3, warmup_steps=1),
                       seed=0)
    assert manifest["rejected_by_reason"] == {"length:too_long": 1,
                                              "pair:identical_answers": 1}
    assert manifest["counts"]["read"] == 6 and manifest["counts"]["kept"] == 4


def test_stopped_dpo_resumes_with_the_same_losses(base_dir, tmp_path):
    path = write_pairs(tmp_path / "pairs.jsonl")
    cfg = small(max_steps=8, batch_size=3, checkpoint_every=4)  # 3 of 4 pairs: epochs cross
    run_dpo([path], base_dir, tmp_path / "straight", cfg, seed=1)
    assert run_dpo([path], base_dir, tmp_path / "resumed", cfg, seed=1, stop_after=5) is None
    run_dpo([path], base_dir, tmp_path / "resumed", cfg, seed=1)
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert [a[s]["loss"] for s in a] == [b[s]["loss"] for s in a]
