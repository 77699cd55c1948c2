"""The model card's numbers are the manifests' numbers: tokens per source and per license,
rejections by reason, PII replaced, synthetic share, in the card's own tables and in its
public summary of training content (the EU AI Act template's structure)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from fournil.core.stage import read_manifest
from fournil.curate.config import CurateConfig
from fournil.export.ai_act import RunManifests
from fournil.export.card import render_model_card
from fournil.ingest.config import SourceSpec
from fournil.provenance.licenses import DEFAULT_ALLOWED
from fournil.stages import RunLayout
from fournil.tokenizer.config import TokenizerConfig
from fournil.tokens.config import TokensConfig

DATA = Path(__file__).resolve().parents[2] / "data"


def _manifests(layout: RunLayout) -> RunManifests:
    """What the export stage gives the card: the manifests of the stages the run ran."""
    return {name: read_manifest(layout.path(name)) for name in typing.get_type_hints(RunManifests)
            if layout.path(name).exists()}


def _section(card: str, heading: str) -> str:
    """The text under `heading`, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = card.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")
                and len(lines[i].split(" ")[0]) <= len(level)), len(lines))
    return "\n".join(lines[start:end])


def _rows(section: str) -> list[list[str]]:
    """The body rows of the markdown table in `section`, cells stripped."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    return rows[2:]  # header and separator


def _int(cell: str) -> int:
    return int(cell.replace(",", ""))


def _check_summary(card: str, m: dict) -> None:
    """What both tests check: every number of the summary against the manifests."""
    train, val = m["tokens"]["counts"]["train"], m["tokens"]["counts"]["val"]
    curate, ingest = m["curate"]["counts"], m["ingest"]["counts"]
    summary = _section(card, "## Public summary of training content")

    # 1.3: size, held-out part
    assert (f"Training data size (text): {train['tokens']:,} tokens (less than 1 billion "
            f"tokens), in {train['docs']:,} documents; {val['tokens']:,} further tokens "
            f"({val['docs']:,} documents) were held out") in summary

    # 2.x: every training source once, in one category, with its licenses, docs and tokens
    listed = {}
    for key in ("2.1 Publicly available datasets",
                "2.2 Private non-publicly available datasets obtained from third parties",
                "2.5 Synthetic data"):
        for row in _rows(_section(summary, f"#### {key}")):
            assert row[0] not in listed
            listed[row[0]] = (key[:3], row)
    assert set(listed) == set(train["by_source"])
    for source, c in train["by_source"].items():
        _, row = listed[source]
        licenses = curate["by_source"][source]["licenses"]
        assert row[1:4] == [", ".join(sorted(licenses)), str(c["docs"]), f"{c['tokens']:,}"]
    assert sum(_int(row[3]) for _, row in listed.values()) == train["tokens"]

    # the card's tables by source and by license
    by_license = {r[0]: r[1:3] for r in _rows(_section(card, "### Training tokens by license"))}
    assert by_license == {lic: [str(c["docs"]), f"{c['tokens']:,}"]
                          for lic, c in train["by_license"].items()}
    rejected = {r[0]: int(r[1]) for r in _rows(_section(card, "### Rejected during curation"))}
    assert rejected == (curate["rejected"] or {"(none)": 0})

    # 3.1 license gate, 3.2 PII, 3.3 every removal by stage and filter
    gate = {r: n for r, n in curate["rejected"].items() if r.startswith("license:")}
    assert f"{sum(gate.values()):,} documents were rejected by the gate" in summary
    for reason, n in gate.items():
        assert f"{reason} {n:,}" in _section(summary, "#### 3.1 Respect of reservation of "
                                                      "rights from the text and data mining "
                                                      "exception")
    pii = _section(summary, "#### 3.2 Removal of illegal content")
    assert f"replaced {sum(curate['pii'].values()):,} e-mail addresses" in pii
    for kind, n in curate["pii"].items():
        assert f"{kind} {n:,}" in pii
    removed = _rows(_section(summary, "#### 3.3 Other information: curation"))
    total_removed = ingest["read"] - curate["kept"]
    assert sum(_int(r[2]) for r in removed) == total_removed
    for prefix, name in (("license:", "license gate"), ("dup:", "deduplication"),
                         ("quality:", "quality filters")):
        n = sum(v for r, v in curate["rejected"].items() if r.startswith(prefix))
        assert ([_int(r[2]) for r in removed if r[:2] == ["curate", name]] or [0]) == [n]

    # synthetic share
    synthetic = sum(c["tokens"] for s, c in train["by_source"].items() if s.startswith("synth/"))
    assert f"{synthetic:,} of {train['tokens']:,} training tokens" in card


def test_smoke_bake_card_tells_the_manifests_numbers(smoke_bake):
    _, layout = smoke_bake
    card = (layout.export / "README.md").read_text(encoding="utf-8")
    m = _manifests(layout)
    _check_summary(card, m)
    assert "Generators: none." in card  # the smoke corpus holds no synthetic source
    assert "#### 2.3 Data crawled and scraped from online sources\n\nNone" in card
    assert "from openly licensed documents only" in card
    date = m["ingest"]["timings"]["started"][:10]
    assert f"Latest date of data acquisition: {date}" in card
    assert f"French (`fr`): {m['curate']['counts']['languages']['fr']:,} documents" in card
    # tokens trained on per source, as the pretrain stage counted them
    seen = m["pretrain"]["mixture"]["tokens_seen"]["natural"]
    rows = {r[0]: r[1] for r in _rows(_section(card, "## Training"))}
    assert rows == {source: f"{n:,}" for source, n in seen.items()}
    assert f"{sum(seen.values()):,} tokens seen" in card


def _passages(n: int) -> list[str]:
    text = (DATA / "cligs-textbox-fr/nouvelles19/nd0011.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n") if len(p.strip()) > 400]
    return paragraphs[:n]


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path.name


def test_card_counts_rejections_pii_licensed_and_synthetic_sources(data_stages, smoke_bake,
                                                                   tmp_path):
    """The real data stages on three sources (a mixed one with gated licenses, a duplicate and
    PII; one under a license the policy admits but that is not open; a synthetic one),
    carded with the smoke bake's pretrain and eval manifests."""
    _, layout = smoke_bake
    p = _passages(9)
    contact = " Écrire à jean.dupont@exemple.fr ou appeler le 01 23 45 67 89 avant midi."
    mixed = [{"id": "pd", "text": p[0]},
             {"id": "pii", "text": p[1] + contact},
             {"id": "nc", "text": p[2], "license": "CC BY-NC-SA 4.0"},
             {"id": "nd", "text": p[3], "license": "CC BY-ND 4.0"},
             {"id": "unknown", "text": p[4], "license": "voir le site"},
             {"id": "short", "text": "Trop court."},
             {"id": "copy", "text": p[0]}]
    sources = [
        SourceSpec(path=_jsonl(tmp_path / "mixed.jsonl", mixed), name="mixed",
                   license="domaine public", language="fr"),
        SourceSpec(path=_jsonl(tmp_path / "acme.jsonl", [{"id": "a", "text": p[5]},
                                                          {"id": "b", "text": p[6]}]),
                   name="acme-archive", license="LicenseRef-Acme-Archive", language="fr"),
        SourceSpec(path=_jsonl(tmp_path / "qa.jsonl", [{"id": "1", "text": p[7]},
                                                        {"id": "2", "text": p[8]}]),
                   name="synth/qa", license="CC-BY-4.0", language="fr"),
    ]
    run = data_stages(sources, tmp_path / "run", until="tokens", base=tmp_path,
                      curate=CurateConfig(allowed_licenses=[*DEFAULT_ALLOWED,
                                                            "LicenseRef-Acme-Archive"]),
                      tokenizer=TokenizerConfig(vocab_size=512),
                      tokens=TokensConfig(val_fraction=0.1, passage_chars=200))
    m = _manifests(run) | {k: v for k, v in _manifests(layout).items()
                           if k in ("pretrain", "eval")}
    curate = m["curate"]["counts"]
    assert curate["rejected"] == {"license:nc": 1, "license:nd": 1, "license:unknown": 1,
                                  "quality:too_short": 1, "dup:exact": 1}
    assert curate["pii"] == {"email": 1, "phone": 1}
    train = m["tokens"]["counts"]["train"]
    assert {"mixed", "acme-archive", "synth/qa"} <= set(train["by_source"])

    vocab = read_manifest(run.tokenizer)["counts"]["vocab_size"]
    card = render_model_card("mixed", {"num_layers": 2, "hidden_size": 64, "num_heads": 4,
                                       "num_kv_heads": 2, "vocab_size": vocab, "max_seq_len": 128,
                                       "tie_embeddings": True}, 164_224, m, ["fr"])
    _check_summary(card, m)
    summary = _section(card, "## Public summary of training content")
    assert "| acme-archive | LicenseRef-Acme-Archive |" in _section(
        summary, "#### 2.2 Private non-publicly available datasets obtained from third parties")
    synth = train["by_source"]["synth/qa"]
    assert f"| synth/qa | {synth['docs']} | {synth['tokens']:,} |" in _section(
        card, "### Synthetic data")
    assert "documents under the licenses its recipe admitted" in card  # not "openly" only
    assert "license:nc 1, license:nd 1, license:unknown 1" in summary
    assert "(email 1, phone 1)" in summary


def test_the_card_is_the_same_whatever_the_run_took(smoke_bake):
    """Two runs of one recipe give one model, so one card: times (an OCR task's answering
    seconds, a stage's timings) must not reach it, or a resumed bake's card differs."""
    _, layout = smoke_bake
    m = _manifests(layout)
    config = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
              "vocab_size": 1024, "max_seq_len": 256, "tie_embeddings": True}
    card = render_model_card("smoke", config, 164_224, m, ["fr"])
    slower = json.loads(json.dumps(m))
    timed = 0
    for result in slower["report"]["results"]:
        for scores in result["tasks"].values():
            for key in [k for k in scores if k.endswith("seconds")]:
                scores[key] = scores[key] * 3 + 1.0
                timed += 1
    assert timed, "the smoke bake's report should hold a timed task (ocr)"
    assert render_model_card("smoke", config, 164_224, slower, ["fr"]) == card


def test_evaluations_run_after_the_bake_go_into_the_card(smoke_bake, tmp_path):
    """`fournil export --results FILE`: the results.json of `fournil eval --report` (here a
    real one, of the smoke export on an OCR folder with subsets) becomes a card section, per
    subset and without times; a file that is not one is refused, naming it."""
    import subprocess
    import sys

    from fournil.export.stage import read_results

    _, layout = smoke_bake
    icdar = tmp_path / "icdar"
    for subset, (ocr, gold) in {"fr_monograph": ("Le cbat dort.", "Le chat dort."),
                                "fr_periodical": ("La rnaison.", "La m@aison.")}.items():
        (icdar / subset).mkdir(parents=True)
        (icdar / subset / "1.txt").write_text(
            f"[OCR_toInput] {ocr}\n[OCR_aligned] {ocr}\n[ GS_aligned] {gold}\n",
            encoding="utf-8")
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "fournil", "-q", "eval", "--model",
                           f"smoke={layout.export}", "--task", f"ocr:{icdar}?copy",
                           "--report", str(report), "--set", "eval.max_new_tokens=8"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(report / "results.json")
    [model] = results[1]
    scores = model["tasks"]["ocr:icdar?copy"]
    m = _manifests(layout)
    config = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
              "vocab_size": 1024, "max_seq_len": 256, "tie_embeddings": True}
    card = render_model_card("smoke", config, 164_224, m, ["fr"], results=[results])
    section = _section(card, "### Further evaluations")
    assert "From `report/results.json`: smoke (FournilLM, `export`)." in section
    rows = {(r[0], r[1], r[2]): r[3:] for r in _rows(section)}
    for subset in ("fr_monograph", "fr_periodical", "all"):
        s = scores if subset == "all" else scores["by_subset"][subset]
        assert rows[("smoke", "ocr:icdar?copy", subset)] == [
            str(s["n"]), *(f"{s[k]:.4f}" for k in ("cer_before", "cer_after", "wer_before",
                                                    "wer_after", "worse", "better"))]
    assert "seconds" not in section and "answering" not in section

    (tmp_path / "bad.json").write_text('{"model": "x"}')
    with pytest.raises(ValueError, match=r"bad.json: expected the results.json"):
        read_results(tmp_path / "bad.json")


def test_the_card_says_what_the_training_texts_were_checked_against(smoke_bake, tmp_path):
    """A real decontam manifest of the smoke run (its curated documents and synthetic
    samples, against an evaluation file quoting one novella and one that quotes nothing),
    under the card's training data: the counts, the files, and the overlap kept."""
    from fournil.core.shards import iter_records
    from fournil.decontam.config import DecontamConfig
    from fournil.decontam.stage import run_decontam

    _, layout = smoke_bake
    doc = next(d for d in iter_records(layout.curate / "documents", ["id", "text"])
               if len(d["text"].split()) > 100)
    (tmp_path / "eval").mkdir()
    quoting = tmp_path / "eval" / "quoting.txt"
    quoting.write_text(" ".join(doc["text"].split()[40:60]))
    (tmp_path / "eval" / "other.jsonl").write_text('{"q": "Une question sans rapport."}\n')
    config = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
              "vocab_size": 1024, "max_seq_len": 256, "tie_embeddings": True}
    m = _manifests(layout)
    assert "### Decontamination" not in render_model_card("smoke", config, 1, m, ["fr"])
    report = run_decontam(layout.curate, layout.synth, [tmp_path / "eval"], tmp_path / "dc",
                          DecontamConfig(on_overlap="report"))
    c = report["counts"]
    assert c["overlapping_documents"] >= 1 and c["too_short"] == 1
    section = _section(render_model_card("smoke", config, 1, {**m, "decontam": report}, ["fr"]),
                       "### Decontamination")
    assert section.strip().startswith(
        f"{c['documents']:,} documents and {c['samples']:,} synthetic training samples were "
        "checked against 2 evaluation files (`eval/other.jsonl`, `eval/quoting.txt`; "
        f"{c['against_windows']:,} distinct windows) for any shared window of 13 consecutive "
        f"words (case and punctuation aside): **{c['overlapping_documents']:,} documents and "
        f"{c['overlapping_samples']:,} samples share one and were kept**")
    assert "1 evaluation text(s) shorter than one window could not be checked." in section
    quoting.unlink()
    clean = run_decontam(layout.curate, layout.synth, [tmp_path / "eval"], tmp_path / "dc",
                         DecontamConfig())
    section = _section(render_model_card("smoke", config, 1, {**m, "decontam": clean}, ["fr"]),
                       "### Decontamination")
    assert "**none shares one**." in section and "`eval/other.jsonl`;" in section
