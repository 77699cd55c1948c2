"""What the generator LLM is asked, per task, under the sampled constraints (or, in naive
mode, one fixed prompt per task). The axis values are spelled out in French so that a small
instruction-tuned model can follow them; a value the recipe invents is quoted as is.
"""

from __future__ import annotations

QUERY_TYPES = {
    "fait": "factuelle", "personne": "sur une personne", "date": "sur une date ou une époque",
    "définition": "qui demande une définition ou une description",
    "explication": "qui demande une explication (pourquoi, comment)",
}
DIFFICULTIES = {
    "facile": "simple, dont la réponse tient en une phrase",
    "moyenne": "de difficulté moyenne",
    "difficile": "difficile, qui oblige à relier plusieurs phrases",
}
LANGUAGES = {"fr": "français", "en": "anglais", "de": "allemand", "es": "espagnol",
             "it": "italien"}
JSON_ONLY = 'Réponds seulement avec un objet JSON : {"query": "…", "answer": "…"}'


def _say(table: dict[str, str], value: str | None, default: str) -> str:
    if value is None:
        return default
    return table.get(value, f"de type « {value} »")


def question_constraints(axes: dict[str, str]) -> str:
    """'La question est factuelle, simple, ... posée par un étudiant, registre familier.'"""
    parts = [_say(QUERY_TYPES, axes.get("query_type"), "factuelle"),
             _say(DIFFICULTIES, axes.get("difficulty"), "de difficulté moyenne")]
    if "persona" in axes:
        parts.append(f"telle que la poserait un {axes['persona']}"
                     if axes["persona"] != "grand public" else "posée par le grand public")
    if "register" in axes:
        parts.append(f"dans un registre {axes['register']}")
    language = LANGUAGES.get(axes.get("language", "fr"), axes.get("language", "fr"))
    return f"La question est {', '.join(parts)}, écrite en {language}."


def rag_prompt(source_block: str, source_id: str, axes: dict[str, str], naive: bool) -> str:
    if naive:
        return (f"{source_block}\n\nÉcris une question sur cette source et sa réponse, qui cite "
                f'la source avec <ref name="{source_id}">…</ref>.\n{JSON_ONLY}')
    return (f"Tu prépares des exemples pour entraîner un assistant qui répond en citant ses "
            f"sources.\n\n{source_block}\n\nÉcris une question à laquelle cette source répond. "
            f"{question_constraints(axes)} Puis écris la réponse : elle cite mot pour mot le "
            f'passage utile sous la forme <ref name="{source_id}">passage exact</ref>.\n'
            f"{JSON_ONLY}")


QA_OUTCOMES = {
    "answerable": "Écris une question à laquelle ce texte répond, et sa réponse, tirée du texte.",
    "unanswerable": "Écris une question sur le même sujet à laquelle ce texte ne répond pas, et "
                    "une réponse qui explique que le texte ne le dit pas.",
    "false_premise": "Écris une question qui repose sur une affirmation fausse d'après ce "
                     "texte, et une réponse qui corrige cette erreur en s'appuyant sur le texte.",
}


def qa_prompt(passage: str, axes: dict[str, str], naive: bool) -> str:
    if naive:
        return f"Texte :\n{passage}\n\nÉcris une question sur ce texte et sa réponse.\n{JSON_ONLY}"
    outcome = QA_OUTCOMES[axes.get("outcome", "answerable")]
    return (f"Tu prépares des exemples pour entraîner un assistant.\n\nTexte :\n{passage}\n\n"
            f"{outcome} {question_constraints(axes)}\n{JSON_ONLY}")


SUMMARY_LENGTHS = {"une phrase": "en une phrase", "deux ou trois phrases":
                   "en deux ou trois phrases", "trente mots": "en trente mots environ"}
SUMMARY_STYLES = {"prose": "", "puces": ", sous forme de liste à puces",
                  "titre": ", avec un titre puis le résumé"}
SUMMARY_AUDIENCES = {"grand public": ", pour le grand public", "enfant": ", pour un enfant",
                     "spécialiste": ", pour un spécialiste"}


def summary_instruction(axes: dict[str, str], naive: bool) -> str:
    """The user's request for a summary (the task prompt itself, not a meta-prompt)."""
    if naive:
        return "Résume ce texte."
    length = SUMMARY_LENGTHS.get(axes.get("length", ""), f"({axes.get('length')})"
                                 if axes.get("length") else "")
    style = SUMMARY_STYLES.get(axes.get("style", "prose"), f", style : {axes.get('style')}")
    audience = SUMMARY_AUDIENCES.get(axes.get("audience", "grand public"),
                                     f", pour {axes.get('audience')}")
    text = f"Résume ce texte {length}{style}{audience}.".replace("  ", " ").replace(" ,", ",")
    language = axes.get("language", "fr")
    if language != "fr":
        text += f" Réponds en {LANGUAGES.get(language, language)}."
    return text
