"""The French analyzer on inputs checked by hand: what a question typed without accents, with
another inflection or with an elided article must still match."""

from __future__ import annotations

from fournil.index.analyzer import ANALYZER_ID, analyze, fold


def test_elision_is_taken_off_both_apostrophes():
    assert analyze("l'échappement") == analyze("échappement") == ["echapp"]
    assert analyze("d’heureuses") == analyze("heureuses")
    assert analyze("jusqu'à Lorsqu'il qu'elle") == []  # elided function words only


def test_accents_and_ligatures_fold_after_stemming():
    assert fold("Machærous œuvre ÉTÉ ç") == "Machaerous oeuvre ETE c"
    assert analyze("Machærous") == analyze("Machaerous") == ["machaerous"]
    assert analyze("œuvres") == analyze("oeuvres") == ["oeuvr"]
    # stemmed while accented, so the stemmer sees French endings: é-words reach one stem
    assert analyze("élevé élever élevée") == ["elev"] * 3


def test_inflections_meet_at_one_stem():
    assert analyze("inventèrent inventé invention") == ["invent"] * 3
    assert analyze("contrastes contraste") == ["contrast"] * 2
    assert analyze("Sélections sélection") == ["select"] * 2


def test_stop_and_question_words_are_dropped():
    assert analyze("Qui est-ce que c'est ? Où, quand, pourquoi, combien ?") == []
    assert analyze("Quel logiciel permet de contrôler l'accessibilité des documents PDF ?") == [
        "logiciel", "permet", "control", "accessibil", "docu", "pdf"]


def test_a_question_without_accents_meets_the_accented_text():
    assert analyze("Qui etait Tistet Vedene au debut") == ["tistet", "veden", "debut"]
    assert analyze("Qui était Tistet Védène au début") == ["tistet", "veden", "debut"]


def test_the_analyzer_id_names_its_version_and_fingerprint():
    name, version, fingerprint = ANALYZER_ID.split("/")
    assert name == "fr-snowball-fold" and version.isdigit() and len(fingerprint) == 12
