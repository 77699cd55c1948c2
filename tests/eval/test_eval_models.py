"""`fournil eval` on real models at small scale: a tiny fournil Transformer (as a checkpoint,
as an export, and as the export run by transformers) and a tiny Llama that only transformers
runs. Scores are checked against direct forward passes, and the two engines against each
other on the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer

from fournil.cli import main
from fournil.eval import multiple_choice, ocr
from fournil.eval.bpb import document_bits_per_byte, held_out_documents
from fournil.eval.lm import HFLM, FournilLM, PromptTooLong, load_lm
from fournil.eval.report import write_report
from fournil.eval.stage import run_eval
from fournil.eval.tasks import EvalSettings, Task, default_tasks, evaluate
from fournil.export.hf import export_hf
from fournil.formats.chatml import ChatEncoder
from fournil.formats.prompts import ocr_messages
from fournil.model.config import TransformerConfig
from fournil.model.generate import generate
from fournil.model.transformer import Transformer
from fournil.tokens.shards import TokenShardWriter

CONTEXTS = [("Il était une fois", " une boulangère"), ("Chaque matin, elle", " pétrissait"),
            ("", "Les enfants du village"), ("« Bonjour ! » disait-elle, et ", "l'odeur")]


@pytest.fixture(scope="module")
def folders(tiny_tokenizer_dir, tmp_path_factory):
    """{"ckpt", "export", "llama"}: one tiny random Transformer saved as our checkpoint and
    as an HF export, and a tiny random Llama with the same tokenizer."""
    root = tmp_path_factory.mktemp("eval-models")
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=320, hidden_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16, intermediate_size=128, max_seq_len=256)
    model = Transformer(cfg)
    with torch.no_grad():  # larger than the init, so the distribution is far from uniform
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    model.save(root / "ckpt")
    shutil.copyfile(tiny_tokenizer_dir / "tokenizer.json", root / "ckpt" / "tokenizer.json")
    export_hf(model, root / "export", tiny_tokenizer_dir, "")

    from transformers import LlamaConfig, LlamaForCausalLM
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False))
    llama.save_pretrained(root / "llama")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_tokenizer_dir / name, root / "llama" / name)
    return {name: root / name for name in ("ckpt", "export", "llama")}


@pytest.fixture(scope="module")
def lms(folders):
    return {"ckpt": load_lm(folders["ckpt"]), "export": load_lm(folders["export"]),
            "hf": load_lm(f"hf:{folders['export']}"), "llama": load_lm(folders["llama"])}


def direct_loglikelihood(model, tokenizer: Tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens) from one plain forward pass: the tokenizer's own
    post-processor adds the BOS, and the continuation is what encoding the whole adds."""
    whole = tokenizer.encode(context + continuation).ids
    n_context = len(tokenizer.encode(context).ids) if context else 1
    with torch.no_grad():
        logits = model(torch.tensor([whole]))
        logits = getattr(logits, "logits", logits)
    logprobs = logits[0, :-1].float().log_softmax(-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(n_context, len(whole)))


def test_engines_are_picked_by_folder(lms):
    assert type(lms["ckpt"]) is FournilLM and type(lms["export"]) is FournilLM
    assert type(lms["hf"]) is HFLM and type(lms["llama"]) is HFLM


def test_loglikelihood_equals_a_direct_forward_pass(lms, folders, tiny_tokenizer_dir):
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    ours = Transformer.load(folders["ckpt"]).eval()
    scores = lms["ckpt"].loglikelihood(CONTEXTS)
    for (context, continuation), score in zip(CONTEXTS, scores, strict=True):
        # a context's trailing space belongs to the continuation's first token
        c, x = (context.rstrip(" "), " " + continuation) if context.endswith(" ") else (
            context, continuation)
        assert score.logprob == pytest.approx(direct_loglikelihood(ours, tokenizer, c, x),
                                              abs=1e-4)
    from transformers import AutoModelForCausalLM
    llama = AutoModelForCausalLM.from_pretrained(folders["llama"], dtype=torch.float32).eval()
    for (context, continuation), score in zip(CONTEXTS[:3], lms["llama"].loglikelihood(
            CONTEXTS[:3]), strict=True):
        assert score.logprob == pytest.approx(
            direct_loglikelihood(llama, tokenizer, context, continuation), abs=1e-4)


def test_transformers_gives_our_loglikelihoods_on_the_same_weights(lms):
    for name in ("export", "hf"):
        for a, b in zip(lms["ckpt"].loglikelihood(CONTEXTS), lms[name].loglikelihood(CONTEXTS),
                        strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert (a.greedy, a.tokens) == (b.greedy, b.tokens)


def test_batching_and_truncation_do_not_change_scores(lms):
    lm = lms["ckpt"]
    one_by_one = [lm.loglikelihood([r], batch_tokens=1)[0] for r in CONTEXTS]
    batched = lm.loglikelihood(CONTEXTS, batch_tokens=4096)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
    # a context longer than the window loses its oldest tokens, as lm-evaluation-harness does
    long_context = "Il était une fois, dans un petit village au bord de la mer. " * 30
    ids, n = lm.continuation_ids(long_context, " une boulangère")
    assert len(ids) == lm.max_len + 1
    (logprobs, _), = lm.token_logprobs([ids])
    assert lm.loglikelihood([(long_context, " une boulangère")])[0].logprob == pytest.approx(
        float(logprobs[-n:].sum()), abs=1e-5)


def test_multiple_choice_picks_the_most_likely_choice(lms, folders, tiny_tokenizer_dir):
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    ours = Transformer.load(folders["ckpt"]).eval()
    items = [multiple_choice.Item("a", "Il était une", ["fois", "boulangère", "mer"], 0),
             multiple_choice.Item("b", "Chaque matin, elle", ["pétrissait", "disait"], 1)]
    result = multiple_choice.score_multiple_choice(lms["ckpt"], items)
    expected_acc = 0.0
    for item, row in zip(items, result["items"], strict=True):
        direct = [direct_loglikelihood(ours, tokenizer, item.context, " " + c)
                  for c in item.choices]
        assert row["logprobs"] == pytest.approx(direct, abs=1e-4)
        best = max(range(len(direct)), key=direct.__getitem__)
        assert row["pred_acc"] == best
        expected_acc += (best == item.gold) / len(items)
        per_char = [lp / len(c) for lp, c in zip(direct, item.choices, strict=True)]
        assert row["pred_acc_norm"] == max(range(len(direct)), key=per_char.__getitem__)
    assert result["acc"] == pytest.approx(expected_acc)
    assert multiple_choice.score_multiple_choice(lms["hf"], items)["items"][0][
        "pred_acc"] == result["items"][0]["pred_acc"]


def test_greedy_chat_is_the_same_in_both_engines(lms, tiny_tokenizer_dir):
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    messages = ocr_messages("Le cbat boit du lalt.")
    prompt = ChatEncoder(tokenizer).encode(messages)
    assert lms["hf"].chat_ids(messages) == prompt  # transformers' template, our encoder
    new = generate(lms["ckpt"].model, prompt, 12, temperature=0, stop_ids=[0, 2])
    expected = tokenizer.decode(new, skip_special_tokens=True)
    assert expected.strip()
    assert lms["ckpt"].chat(messages, 12) == lms["hf"].chat(messages, 12) == expected
    with pytest.raises(PromptTooLong):
        lms["ckpt"].chat(ocr_messages("Il était une fois. " * 100), 12)


def test_document_bpb_predicts_every_token_once(lms, tiny_tokenizer_dir):
    lm = lms["ckpt"]
    short = {"text": "Il était une fois une boulangère.", "source": "a", "language": "fr"}
    long = {"text": "Chaque matin, elle pétrissait la pâte. " * 20, "source": "b",
            "language": "fr"}
    result = document_bits_per_byte(lm, [short, long], seq_len=32)
    n_short, n_long = len(lm.encode(short["text"])), len(lm.encode(long["text"]))
    assert n_long > 32  # read in several windows
    assert result["tokens"] == n_short + n_long
    assert result["bytes"] == len(short["text"].encode()) + len(long["text"].encode())
    (logprobs, _), = lm.token_logprobs([[lm.prefix_id, *lm.encode(short["text"])]])
    assert result["by_source"]["a"]["nats"] == pytest.approx(-float(logprobs.sum()), abs=1e-3)
    assert result["by_language"]["fr"]["nats"] == pytest.approx(result["nats"])
    # the same documents through transformers
    assert document_bits_per_byte(lms["hf"], [short, long], seq_len=32)["bpb"] == pytest.approx(
        result["bpb"], rel=1e-5)


# --- a run folder with tokens, curate and synth stages --------------------------------------

DOCS = [  # id, source, text, lang, declared language, held out
    ("a/1", "a", "Il était une fois, dans un petit village, une boulangère.", "fr", "fr", True),
    ("a/2", "a", "Chaque matin, elle pétrissait la pâte avant l'aube.", "fr", "fr", True),
    ("a/3", "a", "Les enfants venaient acheter des croissants.", "fr", "fr", False),
    ("b/1", "b", "The children came to buy warm croissants every morning.", None, "en", True),
]


def _manifest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"output_hash": folder.name}))


@pytest.fixture(scope="module")
def run_dir(tiny_tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-run")
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    (root / "curate" / "documents").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"id": i, "source": s, "license": "CC0-1.0", "text": t, "lang": lang, "language": decl}
        for i, s, t, lang, decl, _ in DOCS]), root / "curate" / "documents" / "part-00000.parquet")
    _manifest(root / "curate")
    writer = TokenShardWriter(root / "tokens" / "val", np.dtype("<u2"))
    for i, s, t, *_, held_out in DOCS:
        if held_out:
            writer.add(tokenizer.encode(t).ids, {"id": i, "source": s, "license": "CC0-1.0"},
                       len(t.encode()))
    writer.close()
    _manifest(root / "tokens")

    meta_ocr = [{"noisy": "Le cbat boit du lalt.", "clean": "Le chat boit du lait."},
                {"noisy": "Il étalt une fols.", "clean": "Il était une fois."},
                {"noisy": "train only", "clean": "train only"}]
    meta_rag = [{"query": "Qui ?", "sources": [["1", "Elle pétrissait."], ["2", "Le pain."]],
                 "gold": ["1"], "outcome": "answerable"},
                {"query": "Quand ?", "sources": [["1", "Le pain."]], "gold": [],
                 "outcome": "unanswerable"},
                {"query": "Qui ?", "sources": [["1", DOCS[0][2] * 5]], "gold": ["1"],
                 "outcome": "answerable"}]  # longer than the model's context
    rows = [{"id": f"ocr-{k}", "task": "ocr", "split": "train" if k == 2 else "eval",
             "meta": json.dumps(m)} for k, m in enumerate(meta_ocr)]
    rows += [{"id": f"rag-{k}", "task": "rag", "split": "eval", "meta": json.dumps(m)}
             for k, m in enumerate(meta_rag)]
    (root / "synth" / "samples").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "synth" / "samples" / "all-00000.parquet")
    (root / "synth" / "rejected").mkdir()
    pq.write_table(pa.Table.from_pylist([{**rows[0], "id": "bad"}]),
                   root / "synth" / "rejected" / "ocr-eval-00000.parquet")
    _manifest(root / "synth")
    return root


def test_held_out_documents_and_their_languages(run_dir):
    docs = held_out_documents(run_dir / "tokens", run_dir / "curate", max_bytes_per_source=80)
    assert [(d["id"], d["language"]) for d in docs] == [("a/1", "fr"), ("a/2", "fr"),
                                                        ("b/1", "en")]
    # source a is capped at 80 bytes: the second document is cut, on a character boundary
    assert docs[0]["text"] == DOCS[0][2] and DOCS[1][2].startswith(docs[1]["text"])
    assert 80 - 4 < sum(len(d["text"].encode()) for d in docs if d["source"] == "a") <= 80


def test_eval_stage_adds_bits_per_byte_by_language(folders, run_dir, tmp_path):
    manifest = run_eval(folders["ckpt"], run_dir / "tokens", tmp_path / "eval", seq_len=16,
                        max_tokens_per_source=1000, device="cpu", curate_dir=run_dir / "curate")
    bpb = manifest["bpb"]
    # source a is all French, source b all English: the groups are the same documents
    assert set(bpb["by_language"]) == {"fr", "en"}
    assert bpb["by_language"]["fr"] == bpb["by_source"]["a"]
    assert bpb["by_language"]["en"] == bpb["by_source"]["b"]


def test_every_task_on_two_engines_then_the_report(folders, run_dir, tmp_path):
    items = tmp_path / "mc.jsonl"
    items.write_text(json.dumps({"query": "Il était une", "choices": ["fois", "mer"],
                                 "gold": 0}) + "\n", encoding="utf-8")
    tasks = default_tasks(run_dir)
    assert [t.name for t in tasks] == ["bpb", "copy", "ocr", "rag"]
    settings = EvalSettings(run_dir=run_dir, seq_len=32, max_new_tokens=8)
    results = evaluate([str(folders["ckpt"]), f"hf=hf:{folders['export']}"],
                       [*tasks, Task("mc", items)], settings)
    ours, hf = results
    assert (ours["engine"], hf["engine"]) == ("FournilLM", "HFLM")
    o = ours["tasks"]["ocr"]
    assert o["n"] == 2  # the train-split and rejected samples are not evaluated
    chars = [ocr.char_errors("Le cbat boit du lalt.", "Le chat boit du lait."),
             ocr.char_errors("Il étalt une fols.", "Il était une fois.")]
    assert o["cer_before"] == pytest.approx(sum(e for e, _ in chars) / sum(n for _, n in chars))
    assert [i["output"] for i in o["items"]] == [i["output"] for i in hf["tasks"]["ocr"]["items"]]
    assert o["cer_after"] == pytest.approx(hf["tasks"]["ocr"]["cer_after"])
    r = ours["tasks"]["rag"]
    assert (r["answerable"], r["unanswerable"]) == (1, 1)
    assert [(x["id"], x["reason"]) for x in r["rejected"]] == [("rag-2", "rag:prompt_too_long")]
    assert ours["tasks"]["bpb"]["bpb"] == pytest.approx(hf["tasks"]["bpb"]["bpb"], rel=1e-5)
    c = ours["tasks"]["copy"]
    assert c["n"] == settings.max_items  # passages from the run's held-out documents
    assert c["loss_second"] == pytest.approx(hf["tasks"]["copy"]["loss_second"], rel=1e-4)
    assert set(ours["tasks"]["bpb"]["by_language"]) == {"fr", "en"}
    assert ours["tasks"]["mc:mc"]["items"][0]["logprobs"] == pytest.approx(
        hf["tasks"]["mc:mc"]["items"][0]["logprobs"], abs=1e-4)

    report = write_report(results, tmp_path / "report")
    text = report.read_text()
    # the table, bpb by source, by language, and the OCR correction row
    assert text.count(f"| {folders['ckpt']} |") == 4
    assert "## OCR correction" in text
    lines = (tmp_path / "report" / "items" / "hf" / "ocr.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["ocr-0", "ocr-1"]


def test_cli_compares_models_on_a_task(folders, tmp_path, capsys):
    items = tmp_path / "mc.jsonl"
    items.write_text(json.dumps({"query": "Il était une", "choices": ["fois", "mer"],
                                 "gold": 0}) + "\n", encoding="utf-8")
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "smoke.toml"
    main(["-q", "eval", "-r", str(recipe), "--run-dir", str(tmp_path / "run"),
          "--set", "pretrain.device='cpu'",
          "--model", f"ours={folders['ckpt']}", "--model", f"llama={folders['llama']}",
          "--task", f"mc:{items}", "--report", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| model | parameters | mc:mc acc | mc:mc acc_norm |")
    assert "| ours |" in out and "| llama |" in out
    assert (tmp_path / "report" / "report.md").exists()


def test_a_real_instruct_model_through_transformers(smollm2_dir):
    """SmolLM2-135M-Instruct (a tokenizer that adds no BOS, its own chat template)."""
    lm = load_lm(smollm2_dir)
    assert type(lm) is HFLM and lm.bos is None
    tok = lm.tokenizer
    assert lm.prefix_id == tok.bos_token_id  # lm-evaluation-harness's choice
    context = "The capital of France is"
    paris, berlin = lm.loglikelihood([(context, " Paris"), (context, " Berlin")])
    assert paris.logprob > berlin.logprob and paris.greedy and not berlin.greedy
    whole = tok(context + " Paris", add_special_tokens=False).input_ids
    n_context = len(tok(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logprobs = lm.model(torch.tensor([whole])).logits[0, :-1].log_softmax(-1)
    direct = sum(float(logprobs[i - 1, whole[i]]) for i in range(n_context, len(whole)))
    assert paris.logprob == pytest.approx(direct, abs=1e-4)
    answer = lm.chat([{"role": "user", "content": "What is the capital of France? Answer in "
                       "one word."}], 8)
    assert "Paris" in answer and "<|im_end|>" not in answer
