"""Checks shared by the task verifiers: refusals, corrections, CER, LLM replies as JSON.

Each task's `verify` returns its checks as an ordered {name: passed} dict (the sample's
`verification`); the first failed one names the rejection (`verify:<name>`).
"""

from __future__ import annotations

import json
import re

import json_repair
from rapidfuzz.distance import Levenshtein

from fournil.synth.sample import Rejection

_REFUSAL = re.compile(
    r"ne (?:me )?permet(?:tent)? pas|ne (?:le )?(?:contien|mentionn|précis|di|parl|trait|"
    r"évoqu|abord|indiqu)\w* (?:pas|rien|nulle part)|(?:aucune?|nulle) (?:des )?(?:sources?|"
    r"information|mention|passage)|je ne (?:sais|peux|trouve) pas|pas d'information|"
    r"impossible de répondre|pas de réponse|n'(?:y )?(?:figure|apparaît) pas|"
    r"n'(?:y )?(?:est|sont) pas (?:mentionn|indiqu|précis|évoqu|dit)|"
    r"ne sais pas|rien (?:n'est dit|ne permet)|cannot answer|can't answer|"
    r"not (?:mentioned|stated|in the (?:sources?|text))|no information|does not (?:say|mention)",
    re.I)
_CORRECTION = re.compile(
    r"en réalité|contrairement|n'est pas|ne sont pas|n'a pas|n'ont pas|erreur|inexact|faux|"
    r"fausse|prémisse|rectifi|corrig|actually|in fact|incorrect|false premise", re.I)


def is_refusal(text: str) -> bool:
    """Whether `text` says the question cannot be answered from what was given."""
    return bool(_REFUSAL.search(text))


def is_correction(text: str) -> bool:
    """Whether `text` points out an error in the question (a refusal does too)."""
    return is_refusal(text) or bool(_CORRECTION.search(text))


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate: edit distance over the reference's length."""
    return Levenshtein.distance(hypothesis, reference) / max(1, len(reference))


def first_failure(checks: dict[str, bool]) -> str | None:
    """`verify:<name>` of the first failed check, None when all passed."""
    return next((f"verify:{name}" for name, ok in checks.items() if not ok), None)


def parse_json_reply(text: str, fields: tuple[str, ...]) -> dict[str, str]:
    """The JSON object in an LLM reply (code fences, prose around it, single quotes, a
    missing brace are tolerated), with non-empty string `fields`. Raises Rejection with
    reason `parse:no_json` or `parse:missing_<field>`."""
    start = text.find("{")
    if start < 0:
        raise Rejection("parse:no_json", text[:200])
    try:
        data = json.loads(text[start:text.rfind("}") + 1])
    except ValueError:
        data = json_repair.loads(text[start:])
    if isinstance(data, list):  # several objects: the first
        data = next((d for d in data if isinstance(d, dict)), None)
    if not isinstance(data, dict):
        raise Rejection("parse:no_json", text[:200])
    out = {}
    for name in fields:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Rejection(f"parse:missing_{name}", text[:200])
        out[name] = value.strip()
    return out
