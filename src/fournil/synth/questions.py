"""Questions built from a passage without a model, for the programmatic generators.

A question is made from one sentence of the passage (the answer) by French templates keyed
on the sampled query type, then dressed for the persona and register. A "personne" question
needs a proper name in the sentence, a "date" one a year; a passage that has none falls back
to a question about a noun phrase ("fait"), and the type built is recorded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fournil.synth.extract import (
    content_words,
    names,
    noun_phrases,
    sentences,
    with_a,
    with_de,
    years,
)
from fournil.synth.sample import Rejection

TEMPLATES = {
    "fait": ["Que dit le texte sur {np} ?", "Qu'apprend-on sur {np} ?",
             "Quelles informations sont données sur {np} ?", "Que sait-on {de_np} ?",
             "Que raconte le passage à propos {de_np} ?", "Que nous dit-on {de_np} ?"],
    "personne": ["Qui est {name} ?", "Que fait {name} dans ce passage ?",
                 "Quel rôle joue {name} ?", "Que dit-on de {name} ?",
                 "Que nous apprend le texte sur {name} ?"],
    "date": ["Que s'est-il passé en {year} ?", "Quel événement est associé à l'année {year} ?",
             "Que nous apprend le texte sur l'année {year} ?"],
    "définition": ["Qu'est-ce que {np} ?", "Comment le texte décrit-il {np} ?",
                   "Quelle description est donnée {de_np} ?",
                   "Comment est présenté{e} {np} ?"],
    "explication": ["Pourquoi le texte évoque-t-il {np} ?", "Quel est le rôle {de_np} ici ?",
                    "Comment s'explique la présence {de_np} dans ce passage ?",
                    "Que faut-il comprendre {de_np} ?"],
}
PERSONA_PREFIXES = {
    "grand public": [""],
    "étudiant": ["Pour mon exposé : ", "Je révise mon cours : ", ""],
    "chercheur": ["Dans le cadre de mes recherches : ", "Question de recherche : ", ""],
    "journaliste": ["Pour un article : ", "Je vérifie une information : ", ""],
}
REGISTER_PREFIXES = {
    "courant": [""],
    "soutenu": ["Pourriez-vous me le préciser : ", "Auriez-vous l'obligeance de me dire : "],
    "familier": ["Dis, ", "Au fait, ", "Tu sais "],
}
MIN_SENTENCE, MAX_SENTENCE = 40, 320


@dataclass
class Question:
    query: str
    key: str  # what the question is about (a noun phrase, a name, a year)
    answer: list[str]  # the passage's sentences that answer it
    query_type: str  # the type built (a fallback when the passage lacks a name or a year)


def _feature(sentence: str, query_type: str) -> str | None:
    if query_type == "personne":
        found = names(sentence)
    elif query_type == "date":
        found = years(sentence)
    else:
        found = noun_phrases(sentence)
    return found[0] if found else None


def _dress(query: str, persona: str, register: str, rng: random.Random) -> str:
    prefix = rng.choice(PERSONA_PREFIXES.get(persona, [""]))
    second = rng.choice(REGISTER_PREFIXES.get(register, [""]))
    if prefix and second:  # one preamble is plenty
        second = "" if rng.random() < 0.5 else second
        prefix = "" if second else prefix
    lead = prefix + second
    if lead:  # every template opens with an interrogative word, never a name
        query = query[0].lower() + query[1:]
    return lead + query


def _fill(template: str, key: str) -> str:
    feminine = key.lower().startswith(("la ", "une ", "cette "))
    return template.format(np=key, de_np=with_de(key), a_np=with_a(key), name=key, year=key,
                           e="e" if feminine else "")


def build_question(passage: str, rng: random.Random, axes: dict[str, str],
                   naive: bool = False) -> Question:
    """A question that one or two sentences of `passage` answer. Naive: always the first
    template on the first usable sentence, no dressing."""
    found = [s for s in sentences(passage) if MIN_SENTENCE <= len(s) <= MAX_SENTENCE]
    wanted = "fait" if naive else axes.get("query_type", "fait")
    wanted = wanted if wanted in TEMPLATES else "fait"
    for query_type in (wanted, "fait") if wanted != "fait" else ("fait",):
        options = [(i, s, k) for i, s in enumerate(found) if (k := _feature(s, query_type))]
        if options:
            break
    else:
        raise Rejection("plan:no_question", "no sentence with a usable noun phrase")
    index, sentence, key = options[0] if naive else rng.choice(options)
    template = TEMPLATES[query_type][0] if naive else rng.choice(TEMPLATES[query_type])
    query = _fill(template, key)
    answer = [sentence]
    two = query_type == "explication" or axes.get("difficulty") == "difficile"
    if not naive and two and index + 1 < len(found):
        answer.append(found[index + 1])
    if not naive:
        query = _dress(query, axes.get("persona", ""), axes.get("register", ""), rng)
    return Question(query, key, answer, query_type)


def question_about(key: str, rng: random.Random, axes: dict[str, str],
                   naive: bool = False) -> str:
    """A question about `key` (a noun phrase) of the sampled type, dressed like the others."""
    query_type = axes.get("query_type", "fait")
    query_type = query_type if query_type in ("définition", "explication") else "fait"
    query = _fill(TEMPLATES["fait"][0] if naive else rng.choice(TEMPLATES[query_type]), key)
    return query if naive else _dress(query, axes.get("persona", ""), axes.get("register", ""),
                                      rng)


def foreign_key(passage: str, others: list[str], rng: random.Random) -> str:
    """A noun phrase from another document whose content words the passage does not have:
    the subject of a question the passage cannot answer."""
    own = set(content_words(passage))
    candidates = []
    for text in others:
        for sentence in sentences(text):
            for phrase in noun_phrases(sentence):
                words = content_words(phrase)
                if words and not any(w in own for w in words):
                    candidates.append(phrase)
    if not candidates:
        raise Rejection("plan:no_foreign_subject", "no phrase absent from the passage")
    return rng.choice(sorted(set(candidates)))
