"""Damaged files and encodings at ingest, on real files made here: a cut .jsonl.gz/.zst, a
Parquet file with a corrupt row group and one with a cut footer, a cut PDF (reportlab), text
in Latin-1, cp1252, UTF-8 with a BOM and UTF-16, JSON(L) with bad lines, binary data.

The folder test runs the real `fournil ingest` command; the others call `run_ingest`.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from fournil.core.shards import iter_records
from fournil.ingest.charsets import decode
from fournil.ingest.config import SourceSpec
from fournil.ingest.html import extract_html
from fournil.ingest.stage import IngestError, run_ingest
from fournil.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[2]

# French as 1990s-2000s collections have it. Latin-1 has no `œ`; cp1252 does (at 0x9C).
LATIN1_TEXT = ("L'élève à côté de la fenêtre lisait un roman de Molière, « déjà » célèbre ; "
               "le boulanger pétrit la pâte dès l'aube, et à midi le pain doré sort du four. "
               "Où est passé le garçon ? Il était là, près de l'âtre, avec sa sœur aînée.\n"
               ).replace("sœur", "soeur")
CP1252_TEXT = ("Élève à côté, œuvre : « Le Cœur simple » — une nouvelle de Flaubert… "
               "Félicité sert Mme Aubain pendant un demi-siècle ; elle aime Victor, son neveu, "
               "puis Virginie, et enfin un perroquet, Loulou, qu'elle fait empailler.\n")
NOTES = [{"id": f"n{i}", "text": f"Note {i} : le fournil ouvre à {5 + i % 3} h, la fournée "
          f"numéro {i * 7} sort à {i % 60} minutes."} for i in range(100)]


def jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def flip_bytes(path: Path, start: int, count: int = 32) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def write_parquet(path: Path, groups: int, rows: int = 100) -> list[dict]:
    """`groups` row groups of `rows` rows, with page checksums (as arrow can write them)."""
    records = [{"id": f"r{i}", "text": f"Ligne {i} de la table, une phrase assez longue pour "
                f"remplir une page : {i * 31 % 97}."} for i in range(groups * rows)]
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=rows,
                   use_dictionary=False, write_page_checksum=True, compression="zstd")
    return records


def corrupt_row_group(path: Path, group: int) -> None:
    """Damage the middle of the text column's data in one row group (not its page header)."""
    column = pq.ParquetFile(path).metadata.row_group(group).column(1)
    flip_bytes(path, column.data_page_offset + column.total_compressed_size // 2)


def write_pdf(path: Path, lines: list[str]) -> Path:
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setFont("Helvetica", 11)
    for i, line in enumerate(lines):
        pdf.drawString(72, 770 - 16 * i, line)
    pdf.showPage()
    pdf.save()
    return path


def make_damaged_folder(folder: Path) -> dict:
    """Every kind of damage beside good files; returns what the test needs to check."""
    folder.mkdir()
    (folder / "source.toml").write_text('name = "abime"\nlicense = "CC0-1.0"\nlanguage = "fr"\n')
    good_lines = [{"id": f"l{i}", "text": f"Ligne bonne numéro {i}."} for i in range(5)]
    (folder / "01_lignes.jsonl").write_bytes(
        jsonl_bytes(good_lines[:2]) + b'{"id": "cassee", "text": "sans fin\n'
        + jsonl_bytes(good_lines[2:4]) + b'{"id": "latin", "text": "caf\xe9"}\n' + b"[1, 2]\n"
        + jsonl_bytes(good_lines[4:]))
    packed = gzip.compress(jsonl_bytes(NOTES))
    (folder / "02_coupe.jsonl.gz").write_bytes(packed[: len(packed) // 2])  # a cut download
    rows = write_parquet(folder / "03_groupes.parquet", groups=3)
    corrupt_row_group(folder / "03_groupes.parquet", 1)
    write_parquet(folder / "04_pied.parquet", groups=1)
    footer_cut = (folder / "04_pied.parquet").read_bytes()[:-20]
    (folder / "04_pied.parquet").write_bytes(footer_cut)
    pdf = write_pdf(folder / "05_coupe.pdf", ["Un rapport coupé en deux au téléchargement."])
    pdf.write_bytes(pdf.read_bytes()[: pdf.stat().st_size // 2])
    write_pdf(folder / "06_livret.pdf", ["Le levain demande une température stable."])
    (folder / "07_latin1.txt").write_bytes(LATIN1_TEXT.encode("latin-1"))
    (folder / "08_cp1252.txt").write_bytes(CP1252_TEXT.encode("cp1252"))
    (folder / "09_bom.md").write_bytes("\ufeff# Titre\n\nUn texte en Markdown, été.\n".encode())
    (folder / "10_utf16.txt").write_bytes("Le pain de l'été, œuvre d'un boulanger.\n"
                                          .encode("utf-16"))
    (folder / "11_casse.json").write_bytes(b'{"text": "un article", "title": ')
    (folder / "12_page.html").write_bytes(random.Random(0).randbytes(3000))
    (folder / "13_vide.txt").write_bytes(b"")
    return {"good_lines": good_lines, "rows": rows}


def fournil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fournil", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_damaged_folder_through_the_cli(tmp_path):
    made = make_damaged_folder(tmp_path / "abime")
    out = fournil("ingest", str(tmp_path / "abime"), "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == counts
    docs = {d["id"]: d for d in iter_records(tmp_path / "out" / "documents")}
    rejected = list(iter_records(tmp_path / "out" / "rejected"))

    # the cut gzip: the lines before the cut, every one, in order
    notes = [d for d in docs.values() if d["id"].startswith("abime/n")]
    cut = len(notes)
    assert 30 < cut < 100
    assert [d["text"] for d in notes] == [n["text"] for n in NOTES[:cut]]
    # the corrupt row group costs its 100 rows; the groups before and after are read
    table = [d for d in docs.values() if d["id"].startswith("abime/r")]
    assert [d["text"] for d in table] == [r["text"] for r in made["rows"][:100] +
                                          made["rows"][200:]]
    # text in every encoding, character for character, without a BOM
    assert docs["abime/07_latin1"]["text"] == LATIN1_TEXT
    assert docs["abime/08_cp1252"]["text"] == CP1252_TEXT
    assert docs["abime/09_bom"]["text"] == "# Titre\n\nUn texte en Markdown, été.\n"
    assert docs["abime/10_utf16"]["text"] == "Le pain de l'été, œuvre d'un boulanger.\n"
    assert {name: json.loads(docs[f"abime/{name}"]["meta"])["encoding"] for name in
            ("07_latin1", "08_cp1252", "09_bom", "10_utf16")} == {
        "07_latin1": "cp1252", "08_cp1252": "cp1252", "09_bom": "utf-8", "10_utf16": "utf-16"}
    assert docs["abime/06_livret"]["text"] == "Le levain demande une température stable."
    assert [docs[f"abime/l{i}"]["text"] for i in range(5)] == [x["text"] for x in
                                                                 made["good_lines"]]

    # every record read is kept or rejected, every damaged file counted once, with its reason
    assert counts["kept"] == len(docs) == 5 + cut + 200 + 1 + 4
    assert counts["read"] == counts["kept"] + sum(counts["rejected"].values()) == \
        counts["kept"] + len(rejected)
    assert counts["rejected"] == {
        "ingest:bad_json": 2, "ingest:bad_utf8": 1, "ingest:not_object": 1,  # 01, 11
        "ingest:truncated": 1, "ingest:broken_parquet": 2, "ingest:pdf_broken": 1,
        "ingest:binary": 1, "ingest:empty_file": 1}
    damaged = {d["file"]: d for d in manifest["damaged_files"]}
    assert {name: d["reason"] for name, d in damaged.items()} == {
        "02_coupe.jsonl.gz": "ingest:truncated", "03_groupes.parquet": "ingest:broken_parquet",
        "04_pied.parquet": "ingest:broken_parquet", "05_coupe.pdf": "ingest:pdf_broken",
        "11_casse.json": "ingest:bad_json", "12_page.html": "ingest:binary",
        "13_vide.txt": "ingest:empty_file"}
    assert (damaged["02_coupe.jsonl.gz"]["line"], damaged["02_coupe.jsonl.gz"]["kept_before"]) \
        == (cut + 1, cut)
    assert (damaged["03_groupes.parquet"]["row"], damaged["03_groupes.parquet"]["kept_before"]) \
        == (100, 100)
    assert "rows 100-199 (100 rows, row group 1)" in damaged["03_groupes.parquet"]["error"]
    assert "checksum" in damaged["03_groupes.parquet"]["error"].lower()
    # the stage ends by listing them (logging goes to stderr)
    assert "7 damaged file(s)" in out.stderr
    assert all(d["path"] in out.stderr for d in manifest["damaged_files"])

    # rejected records keep what is readable, and say where and why
    by_reason = {}
    for r in rejected:
        by_reason.setdefault(r["reason"], []).append(r)
    (truncated,) = by_reason["ingest:truncated"]
    assert truncated["id"] == f"abime/02_coupe.jsonl.gz:{cut + 1}"
    assert json.dumps(NOTES[cut], ensure_ascii=False).startswith(truncated["text"])
    meta = json.loads(truncated["meta"])
    assert meta["file"] == "02_coupe.jsonl.gz" and meta["line"] == cut + 1
    assert "truncated gzip stream" in meta["error"]
    assert {r["id"]: json.loads(r["meta"])["line"] for r in by_reason["ingest:bad_json"]
            if r["id"].startswith("abime/01")} == {"abime/01_lignes.jsonl:3": 3}
    assert all(r["license"] == "CC0-1.0" and r["source"] == "abime" for r in rejected)


def test_strict_stops_at_the_first_damaged_file(tmp_path):
    make_damaged_folder(tmp_path / "abime")
    out = fournil("ingest", str(tmp_path / "abime"), "--out", str(tmp_path / "out"), "--strict")
    assert out.returncode == 2
    # 01_lignes.jsonl comes first: its bad lines are bad records, not a damaged file
    first = str(tmp_path / "abime" / "02_coupe.jsonl.gz")
    assert f"fournil ingest: error: {first}: line " in out.stderr
    assert "damaged file (ingest:truncated: truncated gzip stream" in out.stderr
    assert "03_groupes" not in out.stderr
    assert not (tmp_path / "out").exists()  # nothing committed


def test_recipe_strict_key_and_an_up_to_date_output_with_damage(tmp_path):
    make_damaged_folder(tmp_path / "abime")
    (tmp_path / "strict.toml").write_text(
        f'extends = "{ROOT / "recipes" / "smoke.toml"}"\n\n[ingest]\nstrict = true\n'
        f'sources = [{{ path = "abime" }}]\n')
    out = fournil("ingest", "-r", str(tmp_path / "strict.toml"), "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "02_coupe.jsonl.gz: line" in out.stderr
    # strict is a check, not a parameter of the output: an up-to-date output with damage
    # fails it too, naming the same file
    spec = SourceSpec(path="abime")
    run_ingest([spec], tmp_path / "out", resolve=lambda p: tmp_path / p)
    with pytest.raises(IngestError, match=r"02_coupe\.jsonl\.gz: line \d+: damaged file"):
        run_ingest([spec], tmp_path / "out", resolve=lambda p: tmp_path / p, strict=True)


def ingest(tmp_path: Path, *specs: SourceSpec, out: str = "out") -> tuple[dict, dict, list]:
    manifest = run_ingest(list(specs), tmp_path / out, resolve=lambda p: tmp_path / p)
    counts = manifest["counts"]
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["read"]
    docs = {d["id"]: d for d in iter_records(tmp_path / out / "documents")}
    return manifest, docs, list(iter_records(tmp_path / out / "rejected"))


def test_truncated_zstd_keeps_its_first_records(tmp_path):
    # 1.5 MB: zstd decodes block by block (up to 128 KiB each); a cut block gives nothing
    records = [{"id": f"z{i}", "text": f"Texte numéro {i} du corpus, avec une phrase."}
               for i in range(20_000)]
    packed = zstandard.ZstdCompressor().compress(jsonl_bytes(records))
    (tmp_path / "dump.jsonl.zst").write_bytes(packed[: len(packed) // 2])
    manifest, docs, (cut,) = ingest(tmp_path, SourceSpec(path="dump.jsonl.zst", license="CC0"))
    kept = len(docs)
    assert kept > 1000 and [d["text"] for d in docs.values()] == [r["text"] for r in
                                                                   records[:kept]]
    assert cut["reason"] == "ingest:truncated" and json.loads(cut["meta"])["line"] == kept + 1
    assert manifest["damaged_files"][0]["kept_before"] == kept


def test_plain_jsonl_cut_mid_line_is_truncated(tmp_path):
    data = jsonl_bytes(NOTES[:10])
    (tmp_path / "notes.jsonl").write_bytes(data[:-25])  # the download stopped mid-line
    manifest, docs, (cut,) = ingest(tmp_path, SourceSpec(path="notes.jsonl", license="CC0"))
    assert len(docs) == 9 and cut["reason"] == "ingest:truncated"
    assert cut["text"] == data[:-25].decode().rsplit("\n", 1)[1]
    assert "the file ends inside line 10" in json.loads(cut["meta"])["error"]
    # a last line without a newline that parses is a whole record
    (tmp_path / "whole.jsonl").write_bytes(data.rstrip(b"\n"))
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="whole.jsonl"), out="whole")
    assert len(docs) == 10 and rejected == [] and manifest["damaged_files"] == []


def test_corrupt_gzip_keeps_the_verified_members_only(tmp_path):
    many = [{"text": f"Paragraphe {i} : " + " ".join(f"mot{(i * j) % 1009}" for j in range(40))}
            for i in range(2000)]
    # two members, as two appended downloads or a block-gzipped file; the second corrupt
    first = gzip.compress(jsonl_bytes(many[:1000]))
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(first + gzip.compress(jsonl_bytes(many[1000:])))
    flip_bytes(path, len(first) + (path.stat().st_size - len(first)) // 2, count=64)
    # Corrupt deflate data still inflates, into lines of which hundreds parse as records
    # with the wrong text, until the member's CRC fails at its end: none of them is kept.
    manifest, docs, (bad,) = ingest(tmp_path, SourceSpec(path="c.jsonl.gz", license="CC0"))
    assert [d["text"] for d in docs.values()] == [m["text"] for m in many[:1000]]
    (damaged,) = manifest["damaged_files"]
    assert (damaged["reason"], damaged["line"], damaged["kept_before"]) == \
        ("ingest:corrupt_gzip", 1001, 1000)
    assert "incorrect data check" in damaged["error"] and "cannot be trusted" in damaged["error"]
    assert bad["text"] == ""  # the member boundary is a line boundary: no partial line
    # one member: nothing of it can be trusted
    path.write_bytes(gzip.compress(jsonl_bytes(many)))
    flip_bytes(path, path.stat().st_size // 2, count=64)
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="c.jsonl.gz"), out="one")
    assert docs == {} and [r["reason"] for r in rejected] == ["ingest:corrupt_gzip"]


def test_jsonl_that_is_not_jsonl_is_one_damaged_file(tmp_path):
    (tmp_path / "table.jsonl").write_text("id,text\n1,bonjour\n2,au revoir\n")  # a CSV
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="table.jsonl"))
    assert docs == {} and [r["reason"] for r in rejected] == ["ingest:bad_json"] * 3
    (damaged,) = manifest["damaged_files"]
    assert damaged["line"] == 3 and "not JSONL: none of its 3 line(s)" in damaged["error"]


# --- encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, encoding, expected", [
    (LATIN1_TEXT, "latin-1", "cp1252"),  # cp1252 reads Latin-1 text the same, as browsers do
    (CP1252_TEXT, "cp1252", "cp1252"),
    ("Die Bäckerei öffnet früh. Über die Straße weht ein Duft von frischen Brötchen.\n",
     "cp1252", "cp1252"),
    ("Piekarz wyrabia ciasto o świcie, a w południe wyjmuje z pieca złocisty chleb. "
     "Gdzie jest chłopiec? Był tutaj, przy kominku, ze swoją matką.\n", "cp1250", "cp1250"),
    ("Пекарь месит тесто на рассвете, а в полдень достаёт из печи золотистый хлеб.\n",
     "cp1251", "cp1251"),
    ("Пекарь месит тесто на рассвете, а в полдень достаёт из печи золотистый хлеб.\n",
     "koi8-r", "koi8-r"),
    ("Ο φούρναρης ζυμώνει το ζυμάρι την αυγή και το μεσημέρι βγάζει το ψωμί.\n", "cp1253",
     "cp1253"),
    ("パン屋は夜明けに生地をこね、昼には窯から黄金色のパンを取り出す。\n", "shift_jis", "cp932"),
    ("Le pain de l'été, œuvre d'un boulanger.\n", "utf-16-le", "utf-16-le"),  # no BOM
    ("Le pain de l'été.\n", "utf-32", "utf-32"),  # BOM
    ("pâte", "cp1252", "cp1252"),  # a multi-byte guess (Big5) fits too: not taken
])
def test_detection_reads_each_encoding_right(text, encoding, expected):
    decoded = decode(text.encode(encoding))
    assert (decoded.text, decoded.encoding) == (text, expected)


def test_detection_on_the_bundled_novellas_in_latin1_and_cp1252():
    """Pieces of real French prose, from a line to a few pages, come out character for
    character: the detector alone ranks cp1250, cp775 or mac-latin2 first on many of them."""
    rng = random.Random(0)
    pieces = 0
    for path in sorted((ROOT / "data" / "cligs-textbox-fr" / "nouvelles19").glob("*.txt"))[:12]:
        text = path.read_text(encoding="utf-8")
        for size in (80, 400, 3000):
            start = rng.randrange(len(text) - size)
            piece = text[start:start + size]
            for encoding in ("latin-1", "cp1252"):
                raw = piece.encode(encoding, "ignore")  # what the page lacks is left out
                assert decode(raw).text == raw.decode(encoding).replace("\x85", "…"), (
                    path.name, size, encoding)
                pieces += 1
    assert pieces == 72


def test_detection_limit_turkish_needs_its_encoding_forced():
    turkish = ("Fırıncı şafakta hamuru yoğurur ve öğlen fırından altın renkli ekmeği çıkarır. "
               "Çocuk nerede? Buradaydı, şöminenin yanında, annesiyle birlikte.\n")
    raw = turkish.encode("cp1254")
    # cp1254 differs from cp1252 in six letters only: read as Western, with Icelandic letters
    assert decode(raw).text == raw.decode("cp1252") and "Fýrýncý þafakta" in decode(raw).text
    assert decode(raw, forced="cp1254").text == turkish


def test_valid_utf8_takes_the_fast_path():
    # the detector calls pure ASCII `ascii`; UTF-8 is decided before it is asked
    assert decode(b"plain ASCII text\n").encoding == "utf-8"
    assert decode("\ufeffété".encode()).text == "été"


def test_undecodable_and_forced_encodings(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    russian = "Пекарь месит тесто на рассвете, а в полдень достаёт из печи хлеб.\n"
    # two files glued together in two encodings: no single encoding reads it
    (folder / "melange.txt").write_bytes(LATIN1_TEXT.encode() + russian.encode("cp1251"))
    (folder / "ru.txt").write_bytes(russian.encode("cp1251"))
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="txt"))
    assert docs["txt/ru"]["text"] == russian
    assert json.loads(docs["txt/ru"]["meta"])["encoding"] == "cp1251"
    (bad,) = rejected
    meta = json.loads(bad["meta"])
    assert bad["reason"] == "ingest:undecodable" and "no encoding reads it cleanly" in meta["error"]
    assert meta["detector"]["encoding"] == "cp1252" and meta["detector"]["chaos"] > 0.2
    assert bad["text"].startswith(LATIN1_TEXT)  # the raw bytes, made readable
    assert manifest["damaged_files"][0]["reason"] == "ingest:undecodable"

    # forced: no detection; bytes that do not decode in it are undecodable, naming the line
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="txt", encoding="cp1251"),
                                      out="forced")
    assert docs["txt/ru"]["text"] == russian
    assert docs["txt/melange"]["text"] == (LATIN1_TEXT.encode().decode("cp1251") + russian)
    (folder / "melange.txt").unlink()
    (folder / "ru.txt").write_bytes("ligne un\nligne deux, été\n".encode("cp1252"))
    manifest, docs, (bad,) = ingest(tmp_path, SourceSpec(path="txt", encoding="utf-8"),
                                    out="utf8")
    error = json.loads(bad["meta"])["error"]
    assert bad["reason"] == "ingest:undecodable" and docs == {}
    assert error.startswith("not valid utf-8 (forced for the source)") and "line 2" in error


def test_encoding_in_source_toml_and_unknown_encodings(tmp_path):
    folder = tmp_path / "vieux"
    folder.mkdir()
    short = "élève à côté, œuvre\n" * 3  # too short and dense for the detector alone
    (folder / "court.txt").write_bytes(short.encode("cp1252"))
    manifest, docs, (bad,) = ingest(tmp_path, SourceSpec(path="vieux"))
    assert bad["reason"] == "ingest:undecodable" and "set the source's encoding" in \
        json.loads(bad["meta"])["error"]
    (folder / "source.toml").write_text('encoding = "windows-1252"\n')
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="vieux"), out="side")
    assert docs["vieux/court"]["text"] == short and rejected == []
    assert json.loads(docs["vieux/court"]["meta"])["encoding"] == "cp1252"
    (folder / "source.toml").write_text('encoding = "klingon"\n')
    with pytest.raises(IngestError, match=r"source\.toml: encoding: unknown encoding 'klingon'"):
        ingest(tmp_path, SourceSpec(path="vieux"), out="bad")
    with pytest.raises(RecipeError, match=r"sources\[0\]\.encoding: unknown encoding"):
        SourceSpec(path="vieux", encoding="klingon").validate("ingest.sources[0]")


def test_cli_encoding_forces_it(tmp_path):
    (tmp_path / "court.txt").write_bytes(("élève à côté, œuvre\n" * 3).encode("cp1252"))
    out = fournil("ingest", str(tmp_path / "court.txt"), "--encoding", "cp1252", "--out",
                  str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    (doc,) = iter_records(tmp_path / "out" / "documents")
    assert doc["text"] == "élève à côté, œuvre\n" * 3
    out = fournil("ingest", str(tmp_path / "court.txt"), "--encoding", "klingon", "--out",
                  str(tmp_path / "out2"))
    assert out.returncode == 2 and "unknown encoding 'klingon'" in out.stderr


def test_html_undeclared_cyrillic_page_is_detected():
    page = ("<html><head><title>Хлеб</title></head><body><article><h1>Хлеб</h1><p>Пекарь "
            "месит тесто на рассвете, а в полдень достаёт из печи золотистый хлеб. Дети "
            "приходят за булочками, пока они ещё тёплые.</p></article></body></html>")
    found = extract_html(page.encode("cp1251"))
    assert found.encoding == "cp1251" and found.title == "Хлеб"
    assert "Пекарь месит тесто на рассвете" in found.text
    forced = extract_html(page.encode("cp1251"), encoding="cp1252")  # forced wins, even wrong
    assert forced.encoding == "cp1252" and "Ïåêàðü" in forced.text
