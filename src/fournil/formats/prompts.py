"""The chats of fournil's specialised tasks, in one place.

Synthetic data (`fournil synth`), fine-tuning (`fournil sft`) and evaluation (`fournil eval`)
must put the same words in front of the model, or a model is evaluated on a prompt it was
never tuned on. Each task is a function from its fields to the messages up to the assistant
turn; the assistant's answer is the target.
"""

from __future__ import annotations

from collections.abc import Sequence

from fournil.formats.citations import render_sources

OCR_INSTRUCTION = ("Corrige les erreurs d'OCR de ce texte. Réponds avec le texte corrigé "
                   "seulement, sans rien ajouter.")
RAG_INSTRUCTION = ("Réponds à la question avec les sources ci-dessous. Cite chaque passage "
                   'utilisé mot pour mot sous la forme <ref name="id">passage</ref>. '
                   "Si les sources ne permettent pas de répondre, dis-le.")


def ocr_messages(noisy: str, examples: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Messages asking for the correction of OCR output `noisy`; `examples` (noisy, clean)
    come first as earlier turns answered (a few-shot prompt: the same request, so the
    examples show the answer's form and nothing else)."""
    shots = [m for noisy_, clean in examples for m in (
        {"role": "user", "content": f"{OCR_INSTRUCTION}\n\n{noisy_}"},
        {"role": "assistant", "content": clean})]
    return [*shots, {"role": "user", "content": f"{OCR_INSTRUCTION}\n\n{noisy}"}]


def rag_messages(query: str, sources: Sequence[tuple[str, str]]) -> list[dict]:
    """Messages asking to answer `query` from (id, text) `sources`, quoting them."""
    return [{"role": "user",
             "content": f"{RAG_INSTRUCTION}\n\n{render_sources(sources)}\n\nQuestion : {query}"}]


QA_INSTRUCTION = ("Réponds à la question à partir du texte ci-dessous. Si le texte ne permet pas "
                  "d'y répondre, dis-le ; si la question contient une erreur, corrige-la.")


def qa_messages(passage: str, query: str) -> list[dict]:
    """Messages asking `query` about `passage`, given in the prompt."""
    return [{"role": "user",
             "content": f"{QA_INSTRUCTION}\n\nTexte :\n{passage}\n\nQuestion : {query}"}]


def summary_messages(passage: str, instruction: str = "Résume ce texte.") -> list[dict]:
    """Messages asking for a summary of `passage`; `instruction` says how (length, style,
    audience)."""
    return [{"role": "user", "content": f"{instruction}\n\nTexte :\n{passage}"}]
