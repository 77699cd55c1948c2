"""Ingest on real files: every format, the bundled corpus, and every kind of bad input."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from fournil.core.shards import iter_records, shard_paths
from fournil.ingest.config import SourceSpec
from fournil.ingest.stage import IngestError, run_ingest

DATA = Path(__file__).resolve().parents[2] / "data"


def ingest(tmp_path: Path, *specs: SourceSpec, out: str = "ingest", strict: bool = False) -> dict:
    return run_ingest(list(specs), tmp_path / out, resolve=lambda p: tmp_path / p,
                      rows_per_shard=1000, strict=strict)


def documents(tmp_path: Path, out: str = "ingest") -> list[dict]:
    return list(iter_records(tmp_path / out / "documents"))


def rejected(tmp_path: Path, out: str = "ingest") -> list[dict]:
    return list(iter_records(tmp_path / out / "rejected"))


def jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def assert_conserved(manifest: dict) -> None:
    counts = manifest["counts"]
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["read"]
    for tally in counts["by_source"].values():
        assert tally["kept"] + tally["rejected"] == tally["read"]


ARTICLES = [{"id": f"a{i}", "text": f"Texte numéro {i}, en français.", "url": f"https://x/{i}",
             "title": f"Titre {i}", "tags": ["x", i]} for i in range(5)]


# --- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, pack", [
    ("plain.jsonl", lambda b: b),
    ("docs.jsonl.gz", gzip.compress),
    ("docs.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_jsonl_plain_gzip_zstd(tmp_path, name, pack):
    (tmp_path / name).write_bytes(pack(jsonl_bytes(ARTICLES)))
    manifest = ingest(tmp_path, SourceSpec(path=name, name="web", license="CC-BY-4.0",
                                           language="fr"))
    docs = documents(tmp_path)
    assert [d["id"] for d in docs] == [f"web/a{i}" for i in range(5)]
    assert docs[2]["text"] == ARTICLES[2]["text"]
    assert (docs[2]["url"], docs[2]["title"], docs[2]["language"]) == ("https://x/2", "Titre 2",
                                                                        "fr")
    assert docs[2]["license"] == "CC-BY-4.0" and docs[2]["source"] == "web"
    meta = json.loads(docs[2]["meta"])
    assert meta["file"] == name and meta["line"] == 3 and meta["extra"] == {"tags": ["x", 2]}
    assert manifest["counts"]["read"] == manifest["counts"]["kept"] == 5
    assert manifest["counts"]["by_license"] == {"CC-BY-4.0": 5}


def test_json_object_and_list(tmp_path):
    folder = tmp_path / "wiki"
    folder.mkdir()
    (folder / "one.json").write_text(json.dumps({"body": "Un article.", "title": "Un"}))
    (folder / "many.json").write_text(json.dumps([{"body": "Deux."}, {"body": "Trois."}]))
    (folder / "README.md").write_text("documentation, not a document")
    manifest = ingest(tmp_path, SourceSpec(path="wiki", license="CC-BY-SA-4.0",
                                           text_field="body"))
    docs = {d["id"]: d for d in documents(tmp_path)}
    assert set(docs) == {"wiki/one.json", "wiki/many.json:0", "wiki/many.json:1"}
    assert docs["wiki/one.json"]["title"] == "Un"
    assert docs["wiki/many.json:1"]["text"] == "Trois."
    assert manifest["counts"]["kept"] == 3


def test_parquet_fineweb_columns(tmp_path):
    rows = [{"text": f"Page {i} du web.", "id": f"<urn:uuid:{i}>", "dump": "CC-MAIN-2024-10",
             "url": f"https://example.fr/{i}", "date": "2024-02-21T10:00:00Z",
             "file_path": "s3://commoncrawl/x.warc.gz", "language": "fr",
             "language_score": 0.98, "token_count": 12} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "000_00000.parquet",
                   row_group_size=1000)
    manifest = ingest(tmp_path, SourceSpec(path="000_00000.parquet", name="fineweb2",
                                           license="ODC-By-1.0"))
    docs = documents(tmp_path)
    assert len(docs) == 2500 and manifest["counts"]["kept"] == 2500
    doc = docs[1234]
    assert doc["id"] == "fineweb2/<urn:uuid:1234>"
    assert (doc["url"], doc["date"], doc["language"]) == ("https://example.fr/1234",
                                                          "2024-02-21T10:00:00Z", "fr")
    meta = json.loads(doc["meta"])
    assert meta["row"] == 1234 and meta["extra"] == {
        "dump": "CC-MAIN-2024-10", "file_path": "s3://commoncrawl/x.warc.gz",
        "language_score": 0.98, "token_count": 12}


def test_per_record_license_overrides_the_source(tmp_path):
    rows = [{"identifier": "b1", "text": "Un livre.", "license": "Public Domain",
             "creator": "Hugo", "collection": "Gallica"},
            {"identifier": "b2", "text": "Un autre.", "license": "CC BY-NC 4.0"},
            {"identifier": "b3", "text": "Sans licence propre."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "cc.parquet")
    manifest = ingest(tmp_path, SourceSpec(path="cc.parquet", name="common-corpus",
                                           license="CC-BY-4.0"))
    docs = {d["id"]: d for d in documents(tmp_path)}
    assert docs["common-corpus/b1"]["license"] == "LicenseRef-PublicDomain"
    assert docs["common-corpus/b1"]["author"] == "Hugo"
    assert json.loads(docs["common-corpus/b1"]["meta"])["license_raw"] == "Public Domain"
    assert docs["common-corpus/b2"]["license"] == "CC-BY-NC-4.0"  # the curate gate drops it
    assert docs["common-corpus/b3"]["license"] == "CC-BY-4.0"
    assert manifest["counts"]["by_license"] == {"CC-BY-4.0": 1, "CC-BY-NC-4.0": 1,
                                                "LicenseRef-PublicDomain": 1}


def test_text_folder_with_sidecar_and_metadata(tmp_path):
    folder = tmp_path / "plays"
    folder.mkdir()
    (folder / "Boyer_Agamemnon_tc0146.txt").write_bytes(
        "Oui, Pylade,\u0085il est vrai.\r\nFin.\n".encode())
    (folder / "CorneilleP_Othon_tc0251.txt").write_bytes("\ufeffOthon, acte I.".encode())
    (folder / "notes.md").write_text("# Notes\n\nUn texte en Markdown.")
    (folder / "readme.md").write_text("About this collection.")
    (folder / "metadata.csv").write_text(
        ",idno,author-short,title-short,year,genre\n"
        "tc0146,tc0146,Boyer,Agamemnon,1647,drama\n"
        "tc0251,tc0251,CorneilleP,Othon,1664,drama\n")
    (folder / "source.toml").write_text(
        'name = "theatre"\nlicense = "domaine public"\nlanguage = "fr"\n'
        'metadata_csv = "metadata.csv"\nmetadata_id_column = "idno"\n'
        'metadata_fields = { author = "author-short", title = "title-short", date = "year" }\n')
    manifest = ingest(tmp_path, SourceSpec(path="plays"))
    docs = {d["id"]: d for d in documents(tmp_path)}
    assert set(docs) == {"theatre/Boyer_Agamemnon_tc0146", "theatre/CorneilleP_Othon_tc0251",
                         "theatre/notes"}
    play = docs["theatre/Boyer_Agamemnon_tc0146"]
    assert play["text"] == "Oui, Pylade,\u0085il est vrai.\r\nFin.\n"  # NEL and CRLF kept
    assert (play["author"], play["title"], play["date"]) == ("Boyer", "Agamemnon", "1647")
    assert play["license"] == "LicenseRef-PublicDomain" and play["language"] == "fr"
    meta = json.loads(play["meta"])
    assert meta["license_raw"] == "domaine public" and meta["extra"] == {"genre": "drama"}
    assert docs["theatre/CorneilleP_Othon_tc0251"]["text"] == "Othon, acte I."  # BOM dropped
    assert docs["theatre/notes"]["author"] is None
    assert manifest["counts"]["by_source"]["theatre"]["kept"] == 3


def test_recipe_values_override_the_sidecar(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("Bonjour.")
    (folder / "source.toml").write_text('name = "side"\nlicense = "CC0"\nlanguage = "fr"\n')
    ingest(tmp_path, SourceSpec(path="corpus", name="recipe", license="CC-BY-4.0"))
    (doc,) = documents(tmp_path)
    assert (doc["id"], doc["license"], doc["language"]) == ("recipe/a", "CC-BY-4.0", "fr")


# --- the bundled corpus -------------------------------------------------------------------


def test_bundled_corpus(tmp_path):
    specs = [SourceSpec(path=str(DATA / p)) for p in
             ("cligs-textbox-fr/nouvelles19", "cligs-textbox-fr/theatre17", "wikipedia-fr-sample")]
    manifest = run_ingest(specs, tmp_path / "ingest", resolve=Path)
    counts = manifest["counts"]
    by_source = {name: t["kept"] for name, t in counts["by_source"].items()}
    assert by_source == {"cligs-textbox/nouvelles19": 28, "cligs-textbox/theatre17": 15,
                         "wikipedia-fr": 4}
    assert counts["read"] == counts["kept"] == 47 and counts["rejected"] == {}
    assert counts["by_license"] == {"CC-BY-SA-4.0": 4, "LicenseRef-PublicDomain": 43}
    docs = {d["id"]: d for d in documents(tmp_path)}
    cligs = [d for d in docs.values() if d["source"].startswith("cligs")]
    assert all(d["author"] and d["title"] and d["date"] for d in cligs)
    horla = docs["cligs-textbox/nouvelles19/nd0004"]
    assert (horla["author"], horla["title"], horla["date"]) == ("Maupassant", "Horla", "1886")
    agamemnon = docs["cligs-textbox/theatre17/Boyer_Agamemnon_tc0146"]
    assert (agamemnon["author"], agamemnon["title"]) == ("Boyer", "Agamemnon")
    raw = (DATA / "cligs-textbox-fr/theatre17/Boyer_Agamemnon_tc0146.txt").read_bytes()
    assert agamemnon["text"] == raw.decode() and "\u0085" in agamemnon["text"]
    wiki = [d for d in docs.values() if d["source"] == "wikipedia-fr"]
    assert all(d["title"] and d["date"] and d["language"] == "fr" for d in wiki)
    assert_conserved(manifest)


# --- bad input: whole files ---------------------------------------------------------------
# A damaged file is rejected (what it held before the damage is kept) and the run goes on;
# tests/test_ingest_damage.py runs a folder of every kind through the CLI.


def test_truncated_gzip_keeps_the_lines_before_and_names_file_and_line(tmp_path):
    many = [{"text": f"ligne {i} " + "x" * 200} for i in range(3000)]
    packed = gzip.compress(jsonl_bytes(many))
    (tmp_path / "x.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    manifest = ingest(tmp_path, SourceSpec(path="x.jsonl.gz", license="CC0-1.0"))
    docs, (cut,) = documents(tmp_path), rejected(tmp_path)
    kept = len(docs)
    assert 0 < kept < 3000 and [d["text"] for d in docs] == [m["text"] for m in many[:kept]]
    assert cut["reason"] == "ingest:truncated" and cut["id"] == f"x/x.jsonl.gz:{kept + 1}"
    assert many[kept]["text"].startswith(cut["text"][len('{"text": "'):])  # the line's start
    meta = json.loads(cut["meta"])
    assert meta["line"] == kept + 1 and "truncated gzip stream" in meta["error"]
    assert manifest["counts"]["read"] == kept + 1
    (damaged,) = manifest["damaged_files"]
    assert (damaged["file"], damaged["reason"], damaged["line"], damaged["kept_before"]) == \
        ("x.jsonl.gz", "ingest:truncated", kept + 1, kept)
    assert_conserved(manifest)


def test_truncated_and_corrupt_zstd(tmp_path):
    # 1.5 MB: zstd decodes block by block (up to 128 KiB each), and a cut block gives nothing
    records = [{"id": f"z{i}", "text": f"Texte numéro {i} du corpus, avec une phrase."}
               for i in range(20_000)]
    packed = zstandard.ZstdCompressor().compress(jsonl_bytes(records))
    (tmp_path / "t.jsonl.zst").write_bytes(packed[: len(packed) // 2])
    manifest = ingest(tmp_path, SourceSpec(path="t.jsonl.zst", license="CC0-1.0"))
    kept = manifest["counts"]["kept"]
    assert kept > 1000 and [d["id"] for d in documents(tmp_path)] == [f"t/z{i}"
                                                                      for i in range(kept)]
    assert manifest["counts"]["rejected"] == {"ingest:truncated": 1}
    assert "truncated zstd stream" in manifest["damaged_files"][0]["error"]
    (tmp_path / "c.jsonl.zst").write_bytes(b"this is not zstd at all\n")
    manifest = ingest(tmp_path, SourceSpec(path="c.jsonl.zst", license="CC0-1.0"), out="c")
    assert manifest["counts"] == {**manifest["counts"], "read": 1, "kept": 0,
                                  "rejected": {"ingest:corrupt_zstd": 1}}
    (damaged,) = manifest["damaged_files"]
    assert damaged["line"] == 1 and "corrupt zstd data" in damaged["error"]


def test_not_parquet(tmp_path):
    (tmp_path / "fake.parquet").write_text('{"text": "I am JSON"}\n')
    manifest = ingest(tmp_path, SourceSpec(path="fake.parquet", license="CC0-1.0"))
    (bad,) = rejected(tmp_path)
    assert bad["reason"] == "ingest:broken_parquet" and bad["id"] == "fake/fake.parquet"
    assert "not a readable Parquet file" in json.loads(bad["meta"])["error"]
    assert manifest["counts"]["read"] == 1 and manifest["damaged_files"][0]["file"] == \
        "fake.parquet"


def test_truncated_parquet(tmp_path):
    pq.write_table(pa.table({"text": ["a" * 100] * 100}), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) - 20])
    manifest = ingest(tmp_path, SourceSpec(path="t.parquet", license="CC0-1.0"))
    assert manifest["counts"]["rejected"] == {"ingest:broken_parquet": 1}
    assert "not a readable Parquet file" in manifest["damaged_files"][0]["error"]


def test_parquet_without_text_column(tmp_path):
    pq.write_table(pa.table({"content": ["a", "b"], "id": ["1", "2"]}), tmp_path / "n.parquet")
    with pytest.raises(IngestError, match=r"n\.parquet: no text column 'text' "
                                          r"\(columns: content, id\)"):
        ingest(tmp_path, SourceSpec(path="n.parquet", license="CC0-1.0"))


def test_jsonl_without_text_field(tmp_path):
    (tmp_path / "n.jsonl").write_bytes(jsonl_bytes([{"content": "a"}, {"content": "b"}]))
    with pytest.raises(IngestError, match=r"n\.jsonl: no record has the text field 'text' "
                                          r"\(fields: content\)"):
        ingest(tmp_path, SourceSpec(path="n.jsonl", license="CC0-1.0"))


def test_empty_files_are_one_rejected_record_each(tmp_path):
    folder = tmp_path / "vide"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b"")
    (folder / "b.jsonl").write_bytes(b"\n\n  \n")
    (folder / "c.json").write_bytes(b"[]")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), folder / "d.parquet")
    (folder / "e.txt").write_bytes(b"")
    (folder / "f.jsonl").write_bytes(jsonl_bytes(ARTICLES[:1]))
    manifest = ingest(tmp_path, SourceSpec(path="vide", license="CC0-1.0"))
    assert manifest["counts"]["read"] == 6 and manifest["counts"]["kept"] == 1
    assert manifest["counts"]["rejected"] == {"ingest:empty_file": 5}
    assert {r["id"]: json.loads(r["meta"])["error"] for r in rejected(tmp_path)} == {
        "vide/a.jsonl": "empty file (0 bytes)", "vide/b.jsonl": "no JSON lines (blank lines only)",
        "vide/c.json": "an empty JSON list, no records",
        "vide/d.parquet": "a Parquet file without rows", "vide/e": "empty file (0 bytes)"}
    assert [d["file"] for d in manifest["damaged_files"]] == ["a.jsonl", "b.jsonl", "c.json",
                                                              "d.parquet", "e.txt"]
    assert_conserved(manifest)


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(IngestError, match=r"nowhere\.jsonl: no such file or folder"):
        ingest(tmp_path, SourceSpec(path="nowhere.jsonl"))
    (tmp_path / "doc.xml").write_text("<doc/>")
    with pytest.raises(IngestError, match=r"doc\.xml: unknown format"):
        ingest(tmp_path, SourceSpec(path="doc.xml"))


def test_failed_run_leaves_no_output_and_next_run_recovers(tmp_path):
    good = jsonl_bytes(ARTICLES)
    packed = gzip.compress(good * 50)
    (tmp_path / "d.jsonl.gz").write_bytes(packed[:-30])
    spec = SourceSpec(path="d.jsonl.gz", license="CC0-1.0")
    with pytest.raises(IngestError, match=r"d\.jsonl\.gz: line \d+: damaged file "
                                          r"\(ingest:truncated"):
        ingest(tmp_path, spec, strict=True)
    assert not (tmp_path / "ingest").exists()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(good))
    manifest = ingest(tmp_path, spec, strict=True)
    assert manifest["counts"]["kept"] == 5 and manifest["damaged_files"] == []
    assert not (tmp_path / "ingest.partial").exists()


# --- bad input: records -------------------------------------------------------------------


def test_bad_records_are_rejected_with_reasons(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "text": "Bon document."}).encode(),
        b'{"id": "broken", "text": "no closing brace"',
        b'{"id": "latin1", "text": "caf\xe9"}',
        json.dumps({"id": "notext", "title": "sans texte"}).encode(),
        b"",  # a blank line is not a record
        json.dumps({"id": "blank", "text": "   \n"}).encode(),
        json.dumps({"id": "ok2", "text": "Autre bon document."}).encode(),
        json.dumps({"id": "ok1", "text": "Même id que le premier."}).encode(),
        b"[1, 2]",
    ]
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    manifest = ingest(tmp_path, SourceSpec(path="mixed.jsonl", name="mixed",
                                           license="CC-BY-4.0"))
    counts = manifest["counts"]
    assert [d["id"] for d in documents(tmp_path)] == ["mixed/ok1", "mixed/ok2"]
    assert counts["read"] == 8 and counts["kept"] == 2
    assert counts["rejected"] == {"ingest:bad_json": 1, "ingest:bad_utf8": 1,
                                  "ingest:duplicate_id": 1, "ingest:empty_text": 1,
                                  "ingest:missing_text": 1, "ingest:not_object": 1}
    assert_conserved(manifest)
    bad = {r["reason"]: r for r in rejected(tmp_path)}
    assert all(r["stage"] == "ingest" and r["license"] == "CC-BY-4.0" for r in bad.values())
    assert json.loads(bad["ingest:bad_json"]["meta"])["line"] == 2
    assert bad["ingest:bad_json"]["text"] == lines[1].decode()
    assert bad["ingest:bad_utf8"]["text"] == '{"id": "latin1", "text": "caf\ufffd"}'
    utf8_meta = json.loads(bad["ingest:bad_utf8"]["meta"])
    assert utf8_meta["line"] == 3 and "invalid UTF-8" in utf8_meta["error"]
    assert bad["ingest:missing_text"]["id"] == "mixed/notext"
    assert json.loads(bad["ingest:empty_text"]["meta"])["line"] == 6  # lines are file lines
    assert bad["ingest:duplicate_id"]["text"] == "Même id que le premier."


def test_bad_text_files_are_rejected(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "good.txt").write_text("Un bon texte.")
    (folder / "latin1.txt").write_bytes("première ligne\ndeuxième, été\n".encode("latin-1"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_bytes(b" \n\t\n")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    manifest = ingest(tmp_path, SourceSpec(path="txt", license="CC0-1.0"))
    assert manifest["counts"]["rejected"] == {"ingest:binary": 1, "ingest:empty_file": 1,
                                              "ingest:empty_text": 1}
    bad = {r["id"]: r for r in rejected(tmp_path)}
    assert bad["txt/blank"]["reason"] == "ingest:empty_text"  # a whole file, without text
    assert bad["txt/image"]["text"] == "" and "binary data" in json.loads(
        bad["txt/image"]["meta"])["error"]
    assert [d["file"] for d in manifest["damaged_files"]] == ["empty.txt", "image.txt"]
    docs = {d["id"]: d for d in documents(tmp_path)}
    assert docs["txt/latin1"]["text"] == "première ligne\ndeuxième, été\n"  # detected
    assert json.loads(docs["txt/latin1"]["meta"])["encoding"] == "cp1252"
    assert json.loads(docs["txt/good"]["meta"])["encoding"] == "utf-8"
    assert_conserved(manifest)


def test_unknown_license_is_kept_and_warned(tmp_path, caplog):
    rows = [{"text": "Licence claire.", "license": "CC-BY-4.0"},
            {"text": "Licence étrange.", "license": "Licence maison v3"},
            {"text": "Encore étrange.", "license": "Licence maison v3"}]
    (tmp_path / "lic.jsonl").write_bytes(jsonl_bytes(rows))
    with caplog.at_level(logging.WARNING, logger="fournil.ingest"):
        manifest = ingest(tmp_path, SourceSpec(path="lic.jsonl", name="lic"))
    docs = documents(tmp_path)
    assert [d["license"] for d in docs] == ["CC-BY-4.0", "LicenseRef-Unknown",
                                            "LicenseRef-Unknown"]
    assert json.loads(docs[1]["meta"])["license_raw"] == "Licence maison v3"
    assert manifest["counts"]["by_license"] == {"CC-BY-4.0": 1, "LicenseRef-Unknown": 2}
    warnings = [r.getMessage() for r in caplog.records if r.name == "fournil.ingest"]
    assert len(warnings) == 1  # once per file and string, naming the first place
    assert "lic.jsonl: line 2" in warnings[0] and "'Licence maison v3'" in warnings[0]


def test_no_license_anywhere_is_unknown(tmp_path, caplog):
    (tmp_path / "nolic.jsonl").write_bytes(jsonl_bytes([{"text": "Sans licence."}]))
    with caplog.at_level(logging.WARNING, logger="fournil.ingest"):
        ingest(tmp_path, SourceSpec(path="nolic.jsonl"))
    (doc,) = documents(tmp_path)
    assert doc["license"] == "LicenseRef-Unknown" and doc["id"] == "nolic/nolic.jsonl:1"
    assert any("no license declared" in r.getMessage() for r in caplog.records)


# --- the stage ----------------------------------------------------------------------------


def test_second_run_is_skipped_and_a_changed_input_reruns(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes(ARTICLES))
    spec = SourceSpec(path="a.jsonl", license="CC0-1.0")
    first = ingest(tmp_path, spec)
    shard = shard_paths(tmp_path / "ingest" / "documents")[0]
    mtime = shard.stat().st_mtime_ns
    again = ingest(tmp_path, spec)
    assert again == first and shard.stat().st_mtime_ns == mtime
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes(ARTICLES[:3]))
    third = ingest(tmp_path, spec)
    assert third["key"] != first["key"] and third["counts"]["kept"] == 3
    assert len(documents(tmp_path)) == 3


def test_bad_sidecar_names_file_and_key(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.txt").write_text("Bonjour.")
    (folder / "source.toml").write_text('name = "s"\nlicence = "CC0"\n')
    with pytest.raises(IngestError, match=r"source\.toml: licence: unknown key"):
        ingest(tmp_path, SourceSpec(path="src"))
