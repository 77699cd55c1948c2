"""The OCR task's harness: per-subset rates and shares on a hand-made ICDAR-format folder,
the journal that lets a killed pass resume, the task's options and its few-shot examples,
and (slow) the real ICDAR 2017 French set's "before" figures, which its README states."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fournil.core.validation import RecipeError
from fournil.eval import ocr
from fournil.eval.config import EvalConfig
from fournil.eval.corrector import (
    DEFAULT,
    Correction,
    Corrector,
    change,
    guarded,
    small_changes_only,
)
from fournil.eval.journal import Journal
from fournil.eval.lm import load_lm
from fournil.eval.tasks import EvalSettings, Task, ocr_corrector, parse_task
from fournil.formats.prompts import OCR_INSTRUCTION, ocr_messages

ICDAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "icdar2017-ocr-fr-eval"


def _icdar(path: Path, ocr_aligned: str, gs_aligned: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[OCR_toInput] {ocr_aligned.replace('@', '')}\n"
                    f"[OCR_aligned] {ocr_aligned}\n[ GS_aligned] {gs_aligned}\n", encoding="utf-8")


@pytest.fixture()
def icdar_folder(tmp_path) -> Path:
    """Two subsets, as the real set has: a monograph (2 character errors in 15, 2 word
    errors in 3) and a periodical (1 in 12, 1 in 3), both named 1.txt."""
    _icdar(tmp_path / "fr_monograph" / "1.txt", "Tbe qnick brown", "The quick brown")
    _icdar(tmp_path / "fr_periodical" / "1.txt", "Le cbat dort", "Le chat dort")
    return tmp_path


def test_rates_per_subset_and_shares_by_hand(icdar_folder):
    pairs = ocr.read_icdar(icdar_folder)
    assert [(p.id, p.subset) for p in pairs] == [("fr_monograph/1:0", "fr_monograph"),
                                                  ("fr_periodical/1:0", "fr_periodical")]
    # a "correction" that fixes the monograph's first word and breaks the periodical's last
    answers = {"fr_monograph/1:0": "The qnick brown", "fr_periodical/1:0": "Le cbat dorx"}
    items = [ocr.score_pair(p, answers[p.id], answers[p.id]) for p in pairs]
    mono, per = (ocr.summarize([i]) for i in items)
    assert (mono["cer_before"], mono["cer_after"]) == (2 / 15, 1 / 15)
    assert (mono["wer_before"], mono["wer_after"]) == (2 / 3, 1 / 3)
    assert (mono["better"], mono["worse"]) == (1.0, 0.0)
    assert (per["cer_before"], per["cer_after"]) == (1 / 12, 2 / 12)
    assert (per["better"], per["worse"]) == (0.0, 1.0)
    both = ocr.summarize(items)  # corpus-level: errors summed over summed lengths
    assert both["cer_before"] == 3 / 27 and both["cer_after"] == 3 / 27
    assert both["wer_before"] == 3 / 6 and both["wer_after"] == 3 / 6
    assert both["worse"] == both["better"] == 0.5


def test_every_nth_piece_keeps_every_file(icdar_folder):
    pairs = ocr.read_icdar(icdar_folder, max_chars=6)  # 3 pieces a file
    sample = ocr.every_nth_piece(pairs, 2)
    files = {p.id.rsplit(":", 1)[0] for p in pairs}
    assert {p.id.rsplit(":", 1)[0] for p in sample} == files  # piece 0 of each file
    assert [p.id for p in sample] == [p.id for p in pairs if int(p.id.split(":")[-1]) % 2 == 0]
    assert len(sample) < len(pairs)


def test_a_pass_per_subset_with_a_real_model(icdar_folder, tiny_chat_model_dir):
    """An infinite copy bias copies: every rate after equals the rate before."""
    lm = load_lm(tiny_chat_model_dir)
    result = ocr.evaluate_ocr(Corrector(lm, Correction(margin=math.inf)),
                              ocr.read_icdar(icdar_folder))
    assert result["n"] == 2 and result["rejected"] == []
    assert result["by_subset"]["fr_monograph"]["cer_before"] == 2 / 15
    assert result["by_subset"]["fr_periodical"]["cer_before"] == 1 / 12
    for scores in (result, *result["by_subset"].values()):
        assert scores["cer_after"] == scores["cer_before"]
        assert scores["wer_after"] == scores["wer_before"]
        assert scores["worse"] == scores["better"] == 0.0
    assert [i["output"] for i in result["items"]] == ["Tbe qnick brown", "Le cbat dort"]


def test_a_killed_pass_resumes_from_its_journal(tmp_path, tiny_chat_model_dir):
    lm = load_lm(tiny_chat_model_dir)
    corrector = Corrector(lm, Correction(margin=2.0, span=1), max_new_tokens=12)
    pairs = [ocr.Pair(f"p{i}", noisy, noisy.replace("1", "l")) for i, noisy in enumerate(
        ["Le vil1age dort.", "Il était une fois.", "La mer est 1à.", "Le pain chaud."])]
    path = tmp_path / "journal.jsonl"
    key = {"model": "tiny", "decoding": corrector.correction.decoding_key()}
    ocr.evaluate_ocr(corrector, pairs[:2], Journal(path, key), batch_size=1)
    first = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in first[1:]] == ["p0", "p1"]
    with open(path, "a", encoding="utf-8") as f:  # a kill in the middle of a line
        f.write('{"id": "p2", "raw": "La m')
    whole = ocr.evaluate_ocr(corrector, pairs, Journal(path, key), batch_size=1)
    lines = path.read_text().splitlines()
    assert lines[:3] == first  # the pieces answered before are not answered again
    assert sorted(json.loads(line)["id"] for line in lines[1:]) == ["p0", "p1", "p2", "p3"]
    fresh = ocr.evaluate_ocr(corrector, pairs)
    assert [i["output"] for i in whole["items"]] == [i["output"] for i in fresh["items"]]
    assert whole["cer_after"] == fresh["cer_after"]
    # another evaluation's journal is set aside, not mixed in
    Journal(path, {**key, "model": "other"})
    assert path.with_name("journal.jsonl.stale").exists()
    assert path.read_text().splitlines() == [json.dumps({"journal": {**key, "model": "other"}})]


def test_a_damaged_journal_is_named(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"journal": {}}\n{"id": "a", "raw": "x"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"j\.jsonl:3: not valid JSON"):
        Journal(path, {})


def test_task_options(tmp_path):
    task = parse_task("ocr:icdar?shots=3&copy", resolve=lambda p: tmp_path / p)
    assert task == Task("ocr", tmp_path / "icdar", (("shots", "3"), ("copy", "")))
    assert task.name == "ocr:icdar?shots=3&copy"
    assert ocr.correction_from_options(task.option) == Correction(
        shots=3, margin=DEFAULT.margin, span=DEFAULT.span, max_change=DEFAULT.max_change)
    assert ocr.correction_from_options({"copy": "", "margin": "inf", "max_change": "none"}) == (
        Correction(margin=math.inf, span=DEFAULT.span))
    assert ocr.correction_from_options({}) == Correction()  # greedy, no rule
    assert parse_task("ocr?margin=0").name == "ocr?margin=0"
    for spec, message in (("ocr:x?beam=2", "unknown option 'beam'"),
                          ("copy?copy", "unknown option 'copy'"),
                          ("ocr:x?margin=big", "margin='big': expected float"),
                          ("ocr:x?margin=-1", "copy bias"),
                          ("ocr:x?span=2", "give a margin too"),
                          ("ocr:x?every=0", "every=0: expected a whole number")):
        with pytest.raises(ValueError, match=message):
            parse_task(spec)
    EvalConfig(tasks=["ocr?copy", "ocr:data/icdar?shots=2"]).validate("eval")
    with pytest.raises(RecipeError, match=r"eval\.tasks\[0\]"):
        EvalConfig(tasks=["orc?copy"]).validate("eval")


def test_few_shot_examples_are_synthetic_train_pairs_never_the_evaluated_ones(
        tmp_path, tiny_chat_model_dir):
    meta = [("train", "Le cbat", "Le chat"), ("eval", "Le cbien", "Le chien"),
            ("train", "La rner", "La mer"), ("train", "Le paiu", "Le pain")]
    rows = [{"id": f"s{i}", "task": "ocr", "split": split,
             "meta": json.dumps({"noisy": noisy, "clean": clean})}
            for i, (split, noisy, clean) in enumerate(meta)]
    (tmp_path / "synth" / "samples").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "synth" / "samples" / "a.parquet")
    task = parse_task(f"ocr:elsewhere?shots=2&shots_from={tmp_path / 'synth'}")
    assert task.name == "ocr:elsewhere?shots=2&shots_from=synth"
    corrector = ocr_corrector(load_lm(tiny_chat_model_dir), task, EvalSettings())
    assert corrector.examples == [("Le cbat", "Le chat"), ("La rner", "La mer")]
    assert corrector.messages("Le lalt") == [
        {"role": "user", "content": f"{OCR_INSTRUCTION}\n\nLe cbat"},
        {"role": "assistant", "content": "Le chat"},
        {"role": "user", "content": f"{OCR_INSTRUCTION}\n\nLa rner"},
        {"role": "assistant", "content": "La mer"},
        {"role": "user", "content": f"{OCR_INSTRUCTION}\n\nLe lalt"}]
    assert ocr_messages("Le lalt") == corrector.messages("Le lalt")[-1:]  # zero-shot
    with pytest.raises(ValueError, match="3 shots asked for, 2 examples given"):
        Corrector(corrector.lm, Correction(shots=3), corrector.examples)


def test_the_confidence_rule_keeps_the_input_where_the_answer_rewrites_it():
    source = "Le cbat dort sur le tapis."
    assert change("Le chat dort sur le tapis.", source) == 1 / len(source)
    assert guarded("Le chat dort sur le tapis.", source, 0.25) == "Le chat dort sur le tapis."
    assert guarded("Voici le texte corrigé : un chat.", source, 0.25) == source
    assert guarded("Voici le texte corrigé : un chat.", source, None) != source


def test_the_word_rule_keeps_small_fixes_and_puts_guesses_back():
    source = "Parce qu'on cst d'une timidité\nexccssive, et la rnaison brûla."
    answer = ("Parce qu'on est d'une grande timidité\nexcessive, et la saison brûla.")
    # est (1 letter), excessive (1): kept; "grande " inserted (7), rnaison -> saison (2)
    assert small_changes_only(answer, source, 1) == (
        "Parce qu'on est d'une timidité\nexcessive, et la rnaison brûla.")
    assert small_changes_only(answer, source, 2) == (
        "Parce qu'on est d'une timidité\nexcessive, et la saison brûla.")
    assert small_changes_only(answer, source, 7) == answer
    # the line ends and spacing of the input are the input's where the answer keeps them
    assert small_changes_only(source, source, 1) == source
    # the piece rule first: a rewrite of the whole piece is the input, whatever word_edit says
    assert guarded("Voici le texte corrigé : un chat.", source, 0.25, 40) == source
    assert guarded(answer, source, 0.25, 1) == small_changes_only(answer, source, 1)
    assert guarded(answer, source, None, None) == answer
    with pytest.raises(ValueError, match="word_edit must be >= 1"):
        Correction(word_edit=0)


def test_the_word_rule_is_a_task_option_and_not_part_of_the_journal_key():
    copy = ocr.correction_from_options({"copy": ""})
    assert copy.word_edit == DEFAULT.word_edit
    assert ocr.correction_from_options({"copy": "", "word_edit": "3"}).word_edit == 3
    assert ocr.correction_from_options({"copy": "", "word_edit": "none"}).word_edit is None
    with pytest.raises(ValueError, match="option word_edit='x': expected int"):
        ocr.correction_from_options({"word_edit": "x"})
    # applied after the answer: one journal serves every word_edit
    assert Correction(margin=4.0, span=1, word_edit=2).decoding_key() == Correction(
        margin=4.0, span=1).decoding_key()


@pytest.mark.slow
@pytest.mark.skipif(not ICDAR.is_dir(), reason=f"{ICDAR} is not here (../shared/data)")
def test_the_real_icdar_french_set_before_correction():
    """The README's reference figures (rounded there), from the data, per subset. Reading
    the evaluation set is all this does: it is never trained or tuned on."""
    pairs = ocr.read_icdar(ICDAR)
    items = [ocr.score_pair(p, p.noisy, p.noisy) for p in pairs]
    expected = {"fr_monograph": (991, 0.0146, 0.081), "fr_periodical": (1809, 0.0230, 0.105)}
    for subset, (n, cer, wer) in expected.items():
        scores = ocr.summarize([i for i in items if i["subset"] == subset])
        assert scores["n"] == n
        assert scores["cer_before"] == pytest.approx(cer, abs=5e-5)  # to the README's digits
        assert scores["wer_before"] == pytest.approx(wer, abs=5e-4)
