"""The scores of `fournil eval` on hand-computed cases, no model involved: CER/WER, the ICDAR
reader, citation and refusal rates, multiple-choice normalisation, task and model specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fournil.eval import multiple_choice, ocr, rag
from fournil.eval.lm import ModelSpec, split_trailing_space
from fournil.eval.tasks import Task, parse_task

# --- CER / WER ------------------------------------------------------------------------------

def test_cer_and_wer_by_hand():
    assert ocr.cer("chal", "chat") == 0.25  # one substitution in four characters
    assert ocr.cer("cht", "chat") == 0.25  # one deletion
    assert ocr.cer("chatt", "chat") == 0.25  # one insertion
    assert ocr.wer("le chat noire", "le chat noir") == pytest.approx(1 / 3)
    assert ocr.wer("le noir", "le chat noir") == pytest.approx(1 / 3)
    # "Le cbat est nolr." vs "Le chat est noir.": 2 characters of 17, 2 words of 4
    assert ocr.char_errors("Le cbat est nolr.", "Le chat est noir.") == (2, 17)
    assert ocr.word_errors("Le cbat est nolr.", "Le chat est noir.") == (2, 4)


def test_normalisation_keeps_case_and_punctuation_but_not_layout():
    assert ocr.cer("Le  chat\nnoir ", "Le chat noir") == 0
    assert ocr.cer("e\u0301te\u0301", "été") == 0  # decomposed accents are NFC'd
    assert ocr.cer("le chat", "Le chat") == pytest.approx(1 / 7)
    assert ocr.cer("Le chat,", "Le chat") == pytest.approx(1 / 7)


# --- ICDAR post-OCR files -------------------------------------------------------------------

OCR_ALIGNED = "Tbe qnick@ brown fox jumpss over %%^&* the dog"
GS_ALIGNED = "The quick. brown fox jumps@ over ##### the dog"


def _icdar(path: Path, ocr_aligned: str = OCR_ALIGNED, gs_aligned: str = GS_ALIGNED) -> Path:
    path.write_text(f"[OCR_toInput] {ocr_aligned.replace('@', '')}\n"
                    f"[OCR_aligned] {ocr_aligned}\n[ GS_aligned] {gs_aligned}\n", encoding="utf-8")
    return path


def test_icdar_reader_drops_gaps_and_unaligned_stretches(tmp_path):
    pairs = ocr.read_icdar(_icdar(tmp_path / "fr_001.txt"))
    assert [(p.id, p.noisy, p.clean) for p in pairs] == [
        ("fr_001:0", "Tbe qnick brown fox jumpss over", "The quick. brown fox jumps over"),
        ("fr_001:1", "the dog", "the dog"),
    ]


def test_icdar_reader_cuts_long_text_at_shared_spaces(tmp_path):
    pairs = ocr.read_icdar(_icdar(tmp_path / "doc.txt"), max_chars=12)
    assert [(p.noisy, p.clean) for p in pairs] == [
        ("Tbe qnick", "The quick."), ("brown fox", "brown fox"),
        ("jumpss over", "jumps over"), ("the dog", "the dog")]


def test_icdar_reader_reads_folders_and_names_bad_files(tmp_path):
    _icdar(tmp_path / "b.txt")
    (tmp_path / "sub").mkdir()
    _icdar(tmp_path / "sub" / "a.txt", "Le cbat", "Le chat")
    # sorted paths; ids keep the folder (ICDAR's two subsets both have a 1.txt), and a
    # piece's subset is its file's folder
    pairs = ocr.read_icdar(tmp_path)
    assert [(p.id, p.subset) for p in pairs] == [("b:0", ""), ("b:1", ""), ("sub/a:0", "sub")]
    broken = _icdar(tmp_path / "broken.txt", "Le cbat", "Le chat.")
    with pytest.raises(ValueError, match=r"broken\.txt: the aligned lines differ in length"):
        ocr.read_icdar(broken)
    (tmp_path / "plain.txt").write_text("[OCR_toInput] hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"plain\.txt: not an ICDAR post-OCR file"):
        ocr.read_icdar(tmp_path / "plain.txt")


def test_ocr_pairs_from_synth_samples_name_a_bad_row():
    rows = [{"id": "s1", "meta": {"noisy": "Le cbat", "clean": "Le chat"}}]
    assert ocr.pairs_from_samples(rows) == [ocr.Pair("s1", "Le cbat", "Le chat")]
    with pytest.raises(ValueError, match="sample s2: meta has no string 'clean'"):
        ocr.pairs_from_samples([{"id": "s2", "meta": {"noisy": "x"}}])


# --- cited RAG ------------------------------------------------------------------------------

SOURCES = [("1", "Le pain est cuit au four à bois."), ("2", "La farine vient du moulin.")]


def _item(id_: str, answerable: bool = True) -> rag.Item:
    return rag.Item(id_, "Comment le pain est-il cuit ?", SOURCES, ["1"] if answerable else [],
                    answerable)


def test_citation_and_refusal_rates_on_hand_built_answers():
    scored = [
        # one verbatim quote of the gold source: precision 1, recall 1
        rag.score_answer(_item("a1"), 'Il est <ref name="1">cuit au four\nà bois</ref>.'),
        # two quotes, one not verbatim; cites 2 (not gold) and 1: precision 1/2, recall 1
        rag.score_answer(_item("a2"), '<ref name="2">La farine vient du moulin</ref> et '
                                      '<ref name="1">cuit au four électrique</ref>'),
        # a refusal of an answerable question: no quote, recall 0
        rag.score_answer(_item("a3"), "Je ne sais pas."),
        rag.score_answer(_item("u1", False), "Les sources ne permettent pas de répondre."),
        rag.score_answer(_item("u2", False), '<ref name="1">Le pain est cuit</ref>'),
    ]
    assert [s["refusal"] for s in scored] == [False, False, True, True, False]
    summary = rag.summarize(scored)
    assert summary["n"] == 5 and summary["answerable"] == 3 and summary["unanswerable"] == 2
    assert summary["with_quote"] == pytest.approx(2 / 3)
    assert summary["all_verbatim"] == pytest.approx(1 / 3)
    assert summary["quotes_verbatim"] == pytest.approx(2 / 3)  # 1 of 1, then 1 of 2
    assert summary["precision"] == pytest.approx(0.75)  # (1 + 1/2) / 2 answers that cite
    assert summary["recall"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert summary["false_refusal"] == pytest.approx(1 / 3)
    assert summary["refusal"] == pytest.approx(1 / 2)


def test_a_refusal_that_quotes_is_not_a_refusal():
    assert rag.is_refusal("Aucune information dans les sources.")
    assert not rag.is_refusal('Aucune information, sauf <ref name="1">Le pain</ref>.')


def test_rag_items_from_samples():
    meta = {"query": "Q ?", "sources": [["1", "a"], ["2", "b"]], "gold": ["2"],
            "outcome": "answerable"}
    rows = [{"id": "r1", "meta": meta},
            {"id": "r2", "meta": {**meta, "gold": [], "outcome": "unanswerable"}}]
    items = rag.items_from_samples(rows)
    assert items[0] == rag.Item("r1", "Q ?", [("1", "a"), ("2", "b")], ["2"], True)
    assert not items[1].answerable
    with pytest.raises(ValueError, match=r"sample r3: gold source\(s\) \['9'\]"):
        rag.items_from_samples([{"id": "r3", "meta": {**meta, "gold": ["9"]}}])
    with pytest.raises(ValueError, match="sample r4: meta must have 'query'"):
        rag.items_from_samples([{"id": "r4", "meta": {"sources": []}}])


# --- multiple choice ------------------------------------------------------------------------

def test_length_normalisation_by_hand():
    # -4 over 2 characters (-2 each) loses to -6 over 6 (-1 each) once normalised
    assert multiple_choice.argmax_normalised([-4.0, -6.0], [1, 1]) == 0
    assert multiple_choice.argmax_normalised([-4.0, -6.0], [2, 6]) == 1
    # "été" is 3 characters but 5 UTF-8 bytes: acc_norm and acc_bytes disagree
    logprobs, choices = [-3.3, -5.0], ["été", "hiver"]
    assert multiple_choice.argmax_normalised(logprobs, [len(c) for c in choices]) == 1
    assert multiple_choice.argmax_normalised(logprobs, [len(c.encode()) for c in choices]) == 0


def test_multiple_choice_reader(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"query": "Le chat boit du", "choices": ["lait", "vin"],
                                "gold": 0}) + "\n\n"
                    + json.dumps({"context": "Il était", "choices": ["une", "deux", "trois"],
                                  "label": "2", "id": "x"}) + "\n", encoding="utf-8")
    items = multiple_choice.read_items(good)
    assert items == [multiple_choice.Item("0", "Le chat boit du", ["lait", "vin"], 0),
                     multiple_choice.Item("x", "Il était", ["une", "deux", "trois"], 2)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "choices": ["b", "c"], "gold": 0}\n'
                   '{"query": "a", "choices": ["b", "c"], "gold": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: 'gold' \(or 'label'\) must be an index"):
        multiple_choice.read_items(bad)
    bad.write_text('{"query": "a", "choices": ["b"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not valid JSON"):
        multiple_choice.read_items(bad)


def test_trailing_space_moves_to_the_continuation():
    assert split_trailing_space("Il était une ", "fois") == ("Il était une", " fois")
    assert split_trailing_space("Il était", " une") == ("Il était", " une")


# --- specs ----------------------------------------------------------------------------------

def test_task_and_model_specs(tmp_path):
    assert parse_task("bpb") == Task("bpb")
    assert parse_task("mc:arc.jsonl", resolve=lambda p: tmp_path / p) == Task(
        "mc", tmp_path / "arc.jsonl")
    assert parse_task("mc:arc.jsonl").name == "mc:arc"
    assert parse_task("rag").name == "rag"
    for bad, message in (("mmlu", "unknown kind 'mmlu'"), ("mc", "mc needs a JSONL file"),
                         ("bpb:x", "bpb takes no path")):
        with pytest.raises(ValueError, match=message):
            parse_task(bad)
    assert ModelSpec.parse("runs/a/export") == ModelSpec("runs/a/export", Path("runs/a/export"),
                                                         "auto")
    assert ModelSpec.parse("ours=hf:runs/a/export") == ModelSpec("ours", Path("runs/a/export"),
                                                                 "hf")
    with pytest.raises(ValueError, match="no path"):
        ModelSpec.parse("name=hf:")


def test_recipe_eval_section_is_validated():
    from fournil.recipe import RecipeError, load_recipe, recipe_from_dict

    data = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "smoke.toml").to_dict()
    data["eval"] = {"tasks": ["bpb", "mc:items.jsonl", "ocr"], "max_items": 10}
    assert recipe_from_dict(data).eval.tasks == ["bpb", "mc:items.jsonl", "ocr"]
    data["eval"] = {"tasks": ["bpb", "mmlu"]}
    with pytest.raises(RecipeError, match=r"eval\.tasks\[1\]: expected bpb, mc:PATH"):
        recipe_from_dict(data)
    data["eval"] = {"max_new_tokens": 0}
    with pytest.raises(RecipeError, match=r"eval\.max_new_tokens: must be > 0"):
        recipe_from_dict(data)
