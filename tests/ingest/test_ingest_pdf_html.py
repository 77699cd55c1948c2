"""PDF and HTML ingest on real files: PDFs written here with reportlab (and encrypted with
pypdf), the bundled French government web page, and every kind of bad file beside good ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from fournil.core.shards import iter_records
from fournil.ingest.config import SourceSpec
from fournil.ingest.html import decode_html, extract_html
from fournil.ingest.pdf import PdfEncryptedError, extract_pdf
from fournil.ingest.stage import run_ingest

DATA = Path(__file__).resolve().parents[2] / "data"


def ingest(root: Path, *specs: SourceSpec) -> tuple[dict, list[dict], list[dict]]:
    """(manifest, documents, rejected) of an ingest run; paths are relative to `root`."""
    out = root / "out"
    manifest = run_ingest(list(specs), out, resolve=lambda p: root / p, rows_per_shard=100)
    counts = manifest["counts"]
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["read"]
    return manifest, list(iter_records(out / "documents")), list(iter_records(out / "rejected"))


# --- PDF ----------------------------------------------------------------------------------

# What the two-page PDF below must read as: its heading sizes, paragraphs, the word split at
# a line end (and the hyphenated name that keeps its hyphen), the bullets and the sentence
# that runs over the page break recovered, and the footer repeated on both pages gone.
BOOKLET_TEXT = """\
# Le levain naturel

La fermentation du levain demande une température stable et une farine de qualité. Le \
boulanger surveille la pâte pendant des heures.

Le second paragraphe parle du four à bois de Saint-Denis, de la cuisson et de la croûte \
dorée.

- farine de blé
- eau de source
- sel de Guérande

Le pétrissage dure dix minutes et la pâte repose ensuite une heure.

## La cuisson

Le pain cuit quarante minutes dans un four très chaud, puis il refroidit sur une grille."""


def write_booklet(path: Path) -> Path:
    """Two A4 pages drawn line by line, so that line breaks are where the test says."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle("Le levain et la boulangère")
    pdf.setAuthor("Fournil")

    def lines(y: float, font: str, size: float, texts: list[str], x: float = 72) -> float:
        pdf.setFont(font, size)
        for text in texts:
            pdf.drawString(x, y, text)
            y -= size * 1.3
        return y - 10  # paragraph spacing

    def footer(page: int) -> None:
        pdf.setFont("Helvetica", 8)
        pdf.drawString(72, 40, f"Rapport interne du fournil — page {page}")
        pdf.showPage()

    y = lines(770, "Helvetica-Bold", 20, ["Le levain naturel"])
    y = lines(y, "Helvetica", 11, ["La fermentation du levain demande une tempé-",
                                   "rature stable et une farine de qualité. Le boulanger",
                                   "surveille la pâte pendant des heures."])
    y = lines(y, "Helvetica", 11, ["Le second paragraphe parle du four à bois de Saint-",
                                   "Denis, de la cuisson et de la croûte dorée."])
    y = lines(y, "Helvetica", 11, ["• farine de blé", "• eau de source", "• sel de Guérande"],
              x=80)
    lines(y, "Helvetica", 11, ["Le pétrissage dure dix minutes et la"])
    footer(1)
    y = lines(770, "Helvetica", 11, ["pâte repose ensuite une heure."])
    y = lines(y, "Helvetica-Bold", 16, ["La cuisson"])
    lines(y, "Helvetica", 11, ["Le pain cuit quarante minutes dans un four très chaud,",
                               "puis il refroidit sur une grille."])
    footer(2)
    pdf.save()
    return path


def write_scan(path: Path, image: bool = True) -> Path:
    """A page with a picture and no text layer, as a scanner makes (or a blank page)."""
    pdf = canvas.Canvas(str(path), pagesize=A4)
    if image:
        scan = Image.new("L", (200, 280), 255)
        scan.paste(0, (20, 20, 180, 40))  # a black bar where a line of print would be
        pdf.drawImage(ImageReader(scan), 50, 50, width=500, height=700)
    pdf.showPage()
    pdf.save()
    return path


def test_pdf_structure_is_recovered(tmp_path):
    pdf = extract_pdf(write_booklet(tmp_path / "livret.pdf"))
    assert pdf.text == BOOKLET_TEXT
    assert (pdf.title, pdf.author, pdf.pages, pdf.pages_without_text) == \
        ("Le levain et la boulangère", "Fournil", 2, 0)


def test_encrypted_pdf_raises_with_its_reason(tmp_path):
    writer = PdfWriter(clone_from=write_booklet(tmp_path / "livret.pdf"))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    writer.write(tmp_path / "secret.pdf")
    with pytest.raises(PdfEncryptedError, match="password") as error:
        extract_pdf(tmp_path / "secret.pdf")
    assert error.value.reason == "ingest:pdf_encrypted"


def test_pdf_folder_keeps_good_files_and_rejects_bad_ones(tmp_path):
    folder = tmp_path / "rapports"
    folder.mkdir()
    good = write_booklet(folder / "levain.pdf")
    writer = PdfWriter(clone_from=good)
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    writer.write(folder / "chiffre.pdf")
    data = good.read_bytes()
    (folder / "tronque.pdf").write_bytes(data[: len(data) // 2])
    (folder / "aleatoire.pdf").write_bytes(random.Random(0).randbytes(4096))
    write_scan(folder / "scan.pdf")
    write_scan(folder / "blanc.pdf", image=False)
    (folder / "source.toml").write_text(
        'name = "fournil/rapports"\nlicense = "CC BY 4.0"\nlanguage = "fr"\n', encoding="utf-8")

    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path="rapports"))

    assert [d["id"] for d in docs] == ["fournil/rapports/levain"]
    doc = docs[0]
    assert doc["text"] == BOOKLET_TEXT
    assert (doc["title"], doc["author"], doc["source"], doc["license"], doc["language"]) == \
        ("Le levain et la boulangère", "Fournil", "fournil/rapports", "CC-BY-4.0", "fr")
    assert json.loads(doc["meta"]) == {"file": "levain.pdf", "pages": 2,
                                       "license_raw": "CC BY 4.0"}
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {
        "fournil/rapports/chiffre": "ingest:pdf_encrypted",
        "fournil/rapports/tronque": "ingest:pdf_broken",
        "fournil/rapports/aleatoire": "ingest:binary",
        "fournil/rapports/scan": "ingest:pdf_no_text",
        "fournil/rapports/blanc": "ingest:pdf_no_text",
    }
    assert all(r["license"] == "CC-BY-4.0" and json.loads(r["meta"])["error"] for r in rejected)
    assert manifest["counts"]["read"] == 6 and manifest["counts"]["kept"] == 1
    assert manifest["counts"]["rejected"] == {"ingest:binary": 1, "ingest:pdf_broken": 1,
                                              "ingest:pdf_encrypted": 1, "ingest:pdf_no_text": 2}
    # encrypted and scanned PDFs are whole files, just without usable text: not damage
    assert [(d["file"], d["reason"]) for d in manifest["damaged_files"]] == [
        ("aleatoire.pdf", "ingest:binary"), ("tronque.pdf", "ingest:pdf_broken")]


# --- HTML ---------------------------------------------------------------------------------


def test_bundled_government_page_main_content(tmp_path):
    manifest, docs, rejected = ingest(tmp_path, SourceSpec(path=str(DATA / "etalab-rgaa")))
    assert rejected == [] and len(docs) == 1
    doc = docs[0]
    assert (doc["id"], doc["source"], doc["license"], doc["language"], doc["title"]) == (
        "etalab/rgaa-methodologie/index", "etalab/rgaa-methodologie", "LicenseRef-Etalab-1.0",
        "fr", "Méthodologie de test RGAA 3 2017")
    meta = json.loads(doc["meta"])
    assert meta["file"] == "index.html" and meta["encoding"] == "utf-8" and meta["lang"] == "fr"
    assert meta["license_raw"] == "Licence Ouverte 1.0 ou ultérieure"
    text = doc["text"]
    assert text.startswith("## Introduction\n\nCe document a été établi dans le cadre des "
                           "ressources venant accompagner la prise en main de la version 3")
    assert "\n- la fiabilité des résultats et le recours fréquent par les experts du métier\n" \
        in text
    assert "\n#### Tests 13.17.1, 13.17.2\n" in text
    assert "\n  - que la durée du mouvement ou du clignotement est inférieure à 5 secondes" \
        in text  # a list nested in a numbered item
    # the banner, the navigation menu and the footer are not content
    for boilerplate in ("Sommaire", "Télécharger", "- Images\n- Cadres", "placé sous licence"):
        assert boilerplate not in text
    assert manifest["counts"]["by_source"]["etalab/rgaa-methodologie"]["chars"] == len(text)


LATIN1_PAGE = """<!DOCTYPE html>
<html lang="fr"><head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">
<title>Écoles de la République</title>
<link rel="canonical" href="https://exemple.fr/ecoles/elementaire.html">
</head><body>
<nav><a href="/">Accueil</a> | <a href="/plan">Plan du site</a> | <a href="/c">Contact</a></nav>
<article><h1>L'école élémentaire</h1>
<p>L'école élémentaire accueille les élèves de six à onze ans. Elle comprend cinq niveaux,
du cours préparatoire au cours moyen deuxième année.</p>
<p>Les enseignants y préparent l'entrée au collège, avec des « évaluations » régulières.</p>
</article>
<footer>Mentions légales - Plan du site</footer></body></html>"""

NAVIGATION_ONLY = """<html><head><title>Accueil</title></head><body>
<header><a href="/">Mairie de Saint-Fournil</a></header>
<nav><ul><li><a href="/">Accueil</a></li><li><a href="/agenda">Agenda</a></li>
<li><a href="/contact">Contact</a></li></ul></nav>
<footer><a href="/mentions">Mentions légales</a></footer></body></html>"""


def test_html_folder_latin1_page_kept_empty_and_binary_rejected(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "ecole.html").write_bytes(LATIN1_PAGE.encode("iso-8859-1"))
    (folder / "accueil.htm").write_text(NAVIGATION_ONLY, encoding="utf-8")
    (folder / "logo.html").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    (folder / "vide.html").write_bytes(b"")

    manifest, docs, rejected = ingest(
        tmp_path, SourceSpec(path="pages", name="mairie", license="etalab-2.0", language="fr"))

    assert [d["id"] for d in docs] == ["mairie/ecole"]
    doc = docs[0]
    assert doc["text"] == (
        "# L'école élémentaire\n\n"
        "L'école élémentaire accueille les élèves de six à onze ans. Elle comprend cinq "
        "niveaux, du cours préparatoire au cours moyen deuxième année.\n\n"
        "Les enseignants y préparent l'entrée au collège, avec des « évaluations » régulières.")
    assert (doc["title"], doc["url"], doc["license"]) == (
        "Écoles de la République", "https://exemple.fr/ecoles/elementaire.html",
        "LicenseRef-Etalab-2.0")
    assert json.loads(doc["meta"])["encoding"] == "cp1252"  # browsers read latin-1 so
    assert {r["id"]: r["reason"] for r in rejected} == {
        "mairie/accueil": "ingest:html_no_content",
        "mairie/logo": "ingest:binary",
        "mairie/vide": "ingest:empty_file",  # 0 bytes: damage, whatever the format
    }
    assert manifest["counts"]["read"] == 4 and manifest["counts"]["kept"] == 1
    # a page of navigation only is a whole page without content, not a damaged file
    assert [(d["file"], d["reason"]) for d in manifest["damaged_files"]] == [
        ("logo.html", "ingest:binary"), ("vide.html", "ingest:empty_file")]


@pytest.mark.parametrize("raw, text, encoding", [
    # valid UTF-8 is UTF-8, whatever a stale declaration says
    ('<meta charset="iso-8859-1"><p>été</p>'.encode(), '<meta charset="iso-8859-1"><p>été</p>',
     "utf-8"),
    ("<p>été</p>".encode("utf-16"), "<p>été</p>", "utf-16"),  # the byte order mark decides
    ('<meta charset="koi8-r"><p>хлеб</p>'.encode("koi8-r"), '<meta charset="koi8-r"><p>хлеб</p>',
     "koi8-r"),
    ("<p>pâte</p>".encode("cp1252"), "<p>pâte</p>", "cp1252"),  # undeclared, not UTF-8
])
def test_decode_html_precedence(raw, text, encoding):
    assert decode_html(raw) == (text, encoding)


def test_html_relative_canonical_resolves_against_the_page_url():
    page = LATIN1_PAGE.replace("https://exemple.fr/ecoles/elementaire.html", "/a/b.html")
    found = extract_html(page.encode("iso-8859-1"), url="https://exemple.fr/x/y.html")
    assert found.url == "https://exemple.fr/a/b.html"
    assert found.title == "Écoles de la République" and found.language == "fr"
