"""The error every configuration check raises, naming the key that is wrong.

Kept apart from `recipe.py` so that the modules whose settings the recipe nests (curation
filters, near-dedup, optimizers) can validate themselves without importing the recipe.
"""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"{key}: {message}")
