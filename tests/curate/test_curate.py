"""Curation on real text: the license gate, normalisation, length filter, exact dedup, and
conservation of counts (every record read is kept or rejected with a reason)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fournil.core.shards import iter_records
from fournil.core.stage import read_manifest
from fournil.curate.config import CurateConfig
from fournil.curate.near_copies import NEAR_COPY_KINDS
from fournil.curate.stage import run_curate
from fournil.ingest.config import IngestConfig, SourceSpec

DATA = Path(__file__).resolve().parents[2] / "data"


def _passages(n: int) -> list[str]:
    """Real French prose from the bundled corpus, cut into distinct passages."""
    text = (DATA / "cligs-textbox-fr/nouvelles19/nd0011.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n") if len(p.strip()) > 400]
    assert len(paragraphs) >= n
    return paragraphs[:n]


def _mixed(folder: Path, records: list[dict]) -> SourceSpec:
    """The records as one JSONL source, public domain unless a record says otherwise."""
    (folder / "mixed.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return SourceSpec(path=str(folder / "mixed.jsonl"), name="mixed", license="domaine public")


def _outputs(curate_dir: Path) -> tuple[dict, list, list]:
    return (read_manifest(curate_dir), list(iter_records(curate_dir / "documents")),
            list(iter_records(curate_dir / "rejected")))


@pytest.fixture
def curate(data_stages, tmp_path):
    """`curate(records, config)`: the records ingested and curated in tmp_path ->
    (manifest, kept, rejected)."""
    def run(records: list[dict], config: CurateConfig | None = None):
        layout = data_stages([_mixed(tmp_path, records)], tmp_path,
                             curate=config or CurateConfig())
        return _outputs(layout.curate)
    return run


def test_gate_filters_dedup_and_conservation(curate):
    p = _passages(8)
    records = [
        {"id": "pd", "text": p[0]},                                   # source default: PD
        {"id": "by-sa", "text": p[1], "license": "CC BY-SA 4.0"},
        {"id": "etalab", "text": p[2], "license": "Licence Ouverte v2.0"},
        {"id": "nc", "text": p[3], "license": "CC BY-NC-SA 4.0"},
        {"id": "nc-deed", "text": p[4], "license": "Attribution-NonCommercial 4.0"},
        {"id": "nd", "text": p[5], "license": "CC BY-ND 4.0"},
        {"id": "unknown", "text": p[6], "license": "voir le site de l'éditeur"},
        {"id": "short", "text": "Trop court pour apprendre quoi que ce soit."},
        {"id": "copy", "text": "  " + p[0].upper().replace(" ", "  ") + "\n"},
        {"id": "copy-of-nc", "text": p[3]},  # the NC original was gated: this one is kept
    ]
    manifest, kept, rejected = curate(records)
    reasons = {r["id"].split("/", 1)[1]: r["reason"] for r in rejected}
    assert reasons == {"nc": "license:nc", "nc-deed": "license:nc", "nd": "license:nd",
                       "unknown": "license:unknown", "short": "quality:too_short",
                       "copy": "dup:exact"}
    assert sorted(d["id"] for d in kept) == sorted(
        f"mixed/{i}" for i in ("pd", "by-sa", "etalab", "copy-of-nc"))
    dup = next(r for r in rejected if r["reason"] == "dup:exact")
    assert dup["dup_of"] == "mixed/pd" and dup["stage"] == "curate"

    counts = manifest["counts"]
    assert counts["read"] == len(records)
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["read"]
    source = counts["by_source"]["mixed"]
    assert source["kept"] + sum(source["rejected"].values()) == source["read"] == len(records)
    assert counts["by_license"] == {"LicenseRef-PublicDomain": 2, "CC-BY-SA-4.0": 1,
                                    "LicenseRef-Etalab-2.0": 1}
    # provenance is never rewritten
    by_id = {d["id"]: d for d in kept}
    assert by_id["mixed/by-sa"]["license"] == "CC-BY-SA-4.0"
    assert by_id["mixed/by-sa"]["source"] == "mixed"


def test_normalisation_is_applied_before_dedup(curate):
    p = _passages(1)[0]
    decomposed = p.replace("é", "e\u0301")  # NFD form of the same text
    records = [{"id": "a", "text": p.replace("\n", "\r\n") + "\u0085fin"},
               {"id": "b", "text": decomposed + "\u0085fin"}]
    _, kept, rejected = curate(records)
    assert [d["id"] for d in kept] == ["mixed/a"]
    assert "\u0085" not in kept[0]["text"] and "\r" not in kept[0]["text"]
    assert kept[0]["text"].endswith("\nfin")
    assert rejected[0]["reason"] == "dup:exact"


def test_policy_from_recipe(curate):
    p = _passages(2)
    records = [{"id": "pd", "text": p[0]}, {"id": "sa", "text": p[1], "license": "CC BY-SA 4.0"}]
    config = CurateConfig(allowed_licenses=["LicenseRef-PublicDomain"], min_chars=0)
    manifest, kept, rejected = curate(records, config)
    assert [d["id"] for d in kept] == ["mixed/pd"]
    assert rejected[0]["reason"] == "license:not_allowed"


def test_stage_skips_when_up_to_date(curate, tmp_path):
    records = [{"id": "pd", "text": _passages(1)[0]}]
    first, _, _ = curate(records)
    second = run_curate(tmp_path / "ingest", tmp_path / "curate", CurateConfig())
    assert second == first  # same manifest, same timings: nothing was redone
    third = run_curate(tmp_path / "ingest", tmp_path / "curate", CurateConfig(min_chars=10))
    assert third["key"] != first["key"]


def _novella_documents() -> list[dict]:
    """The bundled novellas cut into documents of a few paragraphs each."""
    docs = []
    for path in sorted((DATA / "cligs-textbox-fr/nouvelles19").glob("*.txt"))[:6]:
        paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n")
                      if len(p.strip()) > 300]
        for k in range(0, min(len(paragraphs), 12) - 2, 3):
            docs.append({"id": f"{path.stem}-{k}", "text": "\n\n".join(paragraphs[k:k + 3])})
    return docs


def _near_copy(text: str) -> str:
    """An edited repost: two words changed, a site's header and footer around it."""
    return NEAR_COPY_KINDS["edits-2+header"](text, random.Random(0))


def test_near_duplicates_pii_bad_documents_and_report(curate, tmp_path):
    docs = _novella_documents()
    assert len(docs) >= 12
    contact = {"id": "contact", "text": docs[5]["text"] + "\n\nÉcrire à "
               "jean.dupont@exemple.fr ou appeler le 06 12 34 56 78."}
    records = [*docs[:5], contact, *docs[6:],
               {"id": "repost", "text": _near_copy(docs[3]["text"])},
               {"id": "blank", "text": " \n\t \n"},
               {"id": "one-line", "text": "mot " * 100_000},
               {"id": "german", "text": "Der Ausschuss trat am Dienstag zusammen, um die "
                "Haushaltsvorschläge der einzelnen Abteilungen zu prüfen. Nach einer langen "
                "Diskussion waren sich die Mitglieder einig, dass die Mittel für öffentliche "
                "Bibliotheken erhöht werden sollten, während neue Büromöbel warten müssen."}]
    manifest, kept, rejected = curate(records)
    reasons = {r["id"].split("/", 1)[1]: (r["reason"], r["dup_of"]) for r in rejected}
    assert reasons["repost"] == ("dup:minhash", f"mixed/{docs[3]['id']}")
    assert "blank" not in reasons  # an empty document stops at ingest, with its reason
    ingest_rejected = list(iter_records(tmp_path / "ingest" / "rejected"))
    assert [(r["id"], r["reason"]) for r in ingest_rejected] == [("mixed/blank",
                                                                  "ingest:empty_text")]
    assert reasons["one-line"][0] == "quality:huge_line"
    assert reasons["german"][0] == "lang:de"  # the default languages are fr and en
    contact = next(d for d in kept if d["id"] == "mixed/contact")
    assert "jean.dupont" not in contact["text"] and "06 12 34" not in contact["text"]
    assert json.loads(contact["pii_counts"]) == {"email": 1, "phone": 1}
    counts = manifest["counts"]
    assert counts["pii"] == {"email": 1, "phone": 1}
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["read"] == len(records) - 1
    assert all(d["lang"] == "fr" and d["lang_score"] > 0.65 for d in kept)

    report = json.loads((tmp_path / "curate" / "report.json").read_text())
    assert report["counts"] == counts
    assert report["examples"]["dup:minhash"][0]["dup_of"] == f"mixed/{docs[3]['id']}"
    markdown = (tmp_path / "curate" / "report.md").read_text()
    for reason in counts["rejected"]:
        assert f"### `{reason}`" in markdown


def test_ray_and_local_processes_give_the_same_result(data_stages, tmp_path, ray_executor):
    docs = _novella_documents()
    records = [*docs, {"id": "repost", "text": _near_copy(docs[2]["text"])},
               {"id": "copy", "text": docs[7]["text"].upper()},
               {"id": "short", "text": docs[8]["text"][:150]},
               {"id": "nc", "text": docs[0]["text"] + " bis", "license": "CC BY-NC 4.0"}]
    source = _mixed(tmp_path, records)

    def curate_on(executor: str) -> tuple[dict, list, list]:
        # shards of 4 rows, so that there are many tasks to spread over the workers
        layout = data_stages([source], tmp_path / executor,
                             ingest=IngestConfig(rows_per_shard=4),
                             curate=CurateConfig(executor=executor, workers=2, task_rows=4))
        return _outputs(layout.curate)

    local, ray = curate_on("local"), curate_on("ray")
    assert local[0]["tasks"] == ray[0]["tasks"] == -(-len(records) // 4) > 2
    assert local[0]["counts"] == ray[0]["counts"]
    assert local[0]["key"] == ray[0]["key"]  # the executor is not part of the result
    assert local[1] == ray[1] and local[2] == ray[2]  # same records, same order
    assert {r["reason"] for r in local[2]} == {"dup:minhash", "dup:exact", "license:nc",
                                               "quality:too_short"}
