"""Cited RAG: a query, the seed passage among distractors from other documents (shuffled,
ids "1".."n"), and an answer that quotes the seed with `<ref name="N">…</ref>`.

Difficulty sets the distractors: one fewer than `distractors` when easy, two more when hard,
and hard ones are the candidates sharing the most words with the seed (hard negatives). An
unanswerable sample drops the seed from the sources; its right answer is a refusal that
cites nothing.

Two generators: the LLM writes {"query", "answer"} from the seed under the sampled
constraints (for an unanswerable sample it writes the query, the answer is a refusal); the
programmatic one builds the query from a sentence of the seed by templates and quotes that
sentence, so cited-RAG data can be made offline.

Checks (answerable): a query, at least one quote, every quote verbatim in the source it
cites, no unknown source id, the seed cited, not a refusal. (Unanswerable): no citation, a
refusal, and the query's subject absent from the remaining sources.
"""

from __future__ import annotations

import json
import random

from fournil.formats.citations import check_citations, render_sources
from fournil.formats.prompts import rag_messages
from fournil.synth.config import SynthConfig
from fournil.synth.extract import content_words, with_de
from fournil.synth.generator import GenRequest
from fournil.synth.llm_prompts import rag_prompt
from fournil.synth.questions import build_question
from fournil.synth.sample import Draft, Item, Passage
from fournil.synth.verify import is_refusal, parse_json_reply

ANSWERS = {
    "courant": ["D'après la source {n} : {q}", "La source {n} l'indique : {q}",
                "Selon la source {n} : {q}", "On lit dans la source {n} : {q}"],
    "soutenu": ["La source {n} le précise en effet : {q}",
                "Ainsi que l'établit la source {n} : {q}"],
    "familier": ["C'est dans la source {n} : {q}", "Regarde la source {n} : {q}"],
}
FOLLOW_UPS = ["Elle ajoute : {q}", "Puis : {q}", "Et plus loin : {q}"]
REFUSALS = ["Les sources fournies ne permettent pas de répondre à cette question.",
            "Aucune des sources ne mentionne {key} : je ne peux pas répondre à partir de ces "
            "documents.",
            "Je ne trouve pas cette information dans les sources, qui ne parlent pas {de_key}."]
MAX_QUERY_CHARS = 400


def _ref(source_id: str, text: str) -> str:
    return f'<ref name="{source_id}">{text}</ref>'


class RagTask:
    name = "rag"

    def _plan(self, item: Item, config: SynthConfig) -> tuple[list[Passage], str | None]:
        """The passages shown, in order (ids "1".."n"), and the seed's id (None when the
        sample is unanswerable). A pure function of the item."""
        rng = random.Random(item.seed)
        k = config.rag.distractors
        difficulty = "moyenne" if item.mode == "naive" else item.axes.get("difficulty")
        k += {"facile": -1, "difficile": 2}.get(difficulty, 0)
        pool = [p for p in item.others if p.doc_id != item.passage.doc_id]
        if difficulty == "difficile":  # hard negatives: the most words in common with the seed
            own = set(content_words(item.passage.text))
            pool = sorted(pool, key=lambda p: (-len(own & set(content_words(p.text))), p.id))
            chosen = pool[:k]
        else:
            chosen = rng.sample(pool, min(k, len(pool)))
        answerable = item.mode == "naive" or item.axes.get("outcome", "answerable") == "answerable"
        shown = [item.passage, *chosen] if answerable else chosen
        rng.shuffle(shown)
        gold = str(shown.index(item.passage) + 1) if answerable else None
        return shown, gold

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None:
        if not config.uses_llm(self.name):
            return None
        shown, gold = self._plan(item, config)
        # the LLM sees the seed under the id it will have among the sources
        source_id = gold or "1"
        block = render_sources([(source_id, item.passage.text)])
        prompt = rag_prompt(block, source_id, item.axes, item.mode == "naive")
        return GenRequest(messages=(("user", prompt),), max_tokens=config.rag.max_tokens,
                          temperature=config.rag.temperature, seed=item.seed % 2**31)

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft:
        shown, gold = self._plan(item, config)
        rng = random.Random(item.seed + 1)
        naive = item.mode == "naive"
        register = "courant" if naive else item.axes.get("register", "courant")
        key = None
        if reply is None:
            question = build_question(item.passage.text, rng, item.axes, naive)
            query, key = question.query, question.key
            if gold:
                template = ANSWERS["courant"][0] if naive else rng.choice(
                    ANSWERS.get(register, ANSWERS["courant"]))
                answer = template.format(n=gold, q=_ref(gold, question.answer[0]))
                for extra in question.answer[1:]:
                    answer += " " + rng.choice(FOLLOW_UPS).format(q=_ref(gold, extra))
            generator_id, query_type = "programmatic", question.query_type
        else:
            parsed = parse_json_reply(reply, ("query", "answer"))
            query, answer = parsed["query"], parsed["answer"]
            query_type = item.axes.get("query_type")
        if not gold:
            answer = rng.choice(REFUSALS if key else REFUSALS[:1]).format(
                key=key, de_key=with_de(key or ""))
        sources = [(str(i + 1), p.text) for i, p in enumerate(shown)]
        messages = [*rag_messages(query, sources), {"role": "assistant", "content": answer}]
        meta = {"query": query, "sources": [list(s) for s in sources],
                "gold": [gold] if gold else [],
                "outcome": "answerable" if gold else "unanswerable",
                "query_type": query_type, "key": key, "gold_passage": item.passage.id}
        if reply is not None:
            meta["reply"] = reply
        return Draft(messages, meta, [item.passage, *[p for p in shown if p != item.passage]],
                     generator=generator_id)

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]:
        meta = draft.meta
        answer = draft.messages[-1]["content"]
        sources = dict(meta["sources"])
        check = check_citations(answer, sources, meta["gold"])
        query_ok = 0 < len(meta["query"]) <= MAX_QUERY_CHARS
        if meta["outcome"] == "answerable":
            return {"query": query_ok, "has_quote": check.quotes > 0,
                    "quotes_verbatim": check.all_verbatim, "known_ids": not check.unknown,
                    "gold_cited": check.gold_cited,
                    "not_refusal": not is_refusal(answer.split("<ref")[0])}
        key_words = set(content_words(meta["key"] or ""))
        absent = item.passage.text not in sources.values() and not any(
            key_words and key_words <= set(content_words(text)) for text in sources.values())
        return {"query": query_ok, "no_citation": check.quotes == 0,
                "is_refusal": is_refusal(answer), "answer_absent": absent}

    def generated_text(self, row: dict) -> str:
        return json.loads(row["meta"])["query"] + "\n" + row["messages"][-1]["content"]
