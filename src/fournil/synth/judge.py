"""LLM-as-judge: a model grades a (prompt, answer) pair from 1 to 5 against a rubric.

`judge(generator, pairs)` is all a caller needs (synth filters its samples with it, SFT data
selection can rank with it). The score is read from the reply ("Note : 4", "4/5", "Score: 4"
or a reply that starts with the digit); a reply without one gets no score and fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from fournil.synth.generator import Generator, GenRequest

RUBRIC = (
    "Tu évalues un exemple d'entraînement pour un assistant. Critères : la réponse est "
    "correcte et fidèle aux textes fournis, elle répond à la demande (ou refuse à juste titre "
    "quand les textes ne permettent pas de répondre, ou corrige une question erronée), elle "
    "est claire et en bon français. Donne une note de 1 (inutilisable) à 5 (excellent). "
    "Réponds par « Note : X » puis une phrase de justification.")
_SCORE = [re.compile(r"(?:note|score|rating)\s*(?:finale\s*)?[:=]?\s*\**\s*([1-5])\b", re.I),
          re.compile(r"\b([1-5])\s*/\s*5\b"), re.compile(r"^\W*([1-5])\b")]


@dataclass
class Verdict:
    score: int | None  # None: the reply had no score, or the request failed
    passed: bool
    reply: str | None
    error: str | None = None


def parse_score(reply: str) -> int | None:
    """The 1-5 score in a judge's reply, None when it has none."""
    for pattern in _SCORE:
        if m := pattern.search(reply):
            return int(m.group(1))
    return None


def judge_request(prompt: str, answer: str, rubric: str = RUBRIC, max_tokens: int = 64,
                  seed: int = 0) -> GenRequest:
    content = (f"{rubric}\n\n### Demande\n{prompt}\n\n### Réponse à évaluer\n{answer}\n\n"
               "Note :")
    return GenRequest(messages=(("user", content),), max_tokens=max_tokens, temperature=0.0,
                      seed=seed)


def judge(generator: Generator, pairs: Sequence[tuple[str, str]], threshold: int = 3,
          rubric: str = RUBRIC, max_tokens: int = 64, progress: bool = False) -> list[Verdict]:
    """One verdict per (prompt, answer): passed when the score is at least `threshold`."""
    requests = [judge_request(p, a, rubric, max_tokens) for p, a in pairs]
    verdicts = []
    for result in generator.generate(requests, progress=progress):
        if result.text is None:
            verdicts.append(Verdict(None, False, None, result.error))
            continue
        # the request ends with "Note :", so a bare digit reply is the score
        score = parse_score(result.text)
        verdicts.append(Verdict(score, score is not None and score >= threshold, result.text))
    return verdicts
