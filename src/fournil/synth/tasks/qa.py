"""Question answering and summarisation on a passage given in the prompt.

QA: a share of the questions cannot be answered from the passage (`unanswerable`: the right
answer says so) or rest on a false premise (`false_premise`: the right answer corrects it).
The LLM writes {"query", "answer"} under the sampled constraints; the programmatic fallback
answers with a sentence of the passage, asks about a subject taken from another document
(unanswerable), or pairs the passage's subject with a foreign one (false premise).

Summaries: the request (length, style, audience) is the user's message; the LLM answers it
directly, the programmatic fallback extracts the passage's most central sentences. A false
premise asks for what the passage says about a subject it does not mention.

Checks: well-formed; answerable answers grounded in the passage (a share of their content
words found in it) and not refusals; unanswerable ones refusals; false premises corrected;
summaries shorter than the passage (and one sentence when one was asked for).
"""

from __future__ import annotations

import json
import random

from fournil.formats.prompts import qa_messages, summary_messages
from fournil.synth.config import SynthConfig
from fournil.synth.extract import content_words, noun_phrases, overlap, sentences, with_a, with_de
from fournil.synth.generator import GenRequest
from fournil.synth.llm_prompts import qa_prompt, summary_instruction
from fournil.synth.questions import build_question, foreign_key, question_about
from fournil.synth.sample import Draft, Item
from fournil.synth.verify import is_correction, is_refusal, parse_json_reply

ANSWERS = ["D'après le texte : « {s} »", "Le texte l'indique : « {s} »",
           "Le passage répond : « {s} »", "Voici ce qu'en dit le texte : « {s} »"]
UNANSWERABLE = ["Le texte ne dit rien {de_key}.",
                "Le passage ne permet pas de répondre : il ne parle pas {de_key}.",
                "Je ne peux pas répondre d'après ce texte, qui ne mentionne pas {key}."]
FALSE_PREMISE_QUERIES = ["Pourquoi le texte associe-t-il {np} {a_key} ?",
                         "Quel lien le passage établit-il entre {np} et {key} ?",
                         "Dans ce texte, que devient {np} face {a_key} ?"]
FALSE_PREMISE_ANSWERS = ["La question contient une erreur : le texte ne mentionne pas {key}. "
                         "Il dit seulement : « {s} »",
                         "Le passage n'établit aucun lien avec {key}, qui n'y apparaît pas. "
                         "En réalité : « {s} »"]
SUMMARY_FALSE_PREMISE = ["Le texte ne parle pas {de_key}. Il traite {de_np}.",
                         "Ce passage ne dit rien {de_key} : il n'en est pas question. Il "
                         "évoque plutôt {np}."]
MAX_QUERY_CHARS, MAX_ANSWER_CHARS = 400, 2000


def _subject_absent(key: str | None, passage: str) -> bool:
    words = set(content_words(key or ""))
    return not words or not words <= set(content_words(passage))


class QaTask:
    name = "qa"

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None:
        if not config.uses_llm(self.name):
            return None
        prompt = qa_prompt(item.passage.text, item.axes, item.mode == "naive")
        return GenRequest(messages=(("user", prompt),), max_tokens=config.qa.max_tokens,
                          temperature=config.qa.temperature, seed=item.seed % 2**31)

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft:
        passage = item.passage.text
        naive = item.mode == "naive"
        outcome = "answerable" if naive else item.axes.get("outcome", "answerable")
        rng = random.Random(item.seed)
        key = None
        if reply is None:
            generator_id = "programmatic"
            question = build_question(passage, rng, item.axes, naive)
            sentence = " ".join(question.answer)
            if outcome == "answerable":
                query = question.query
                answer = (ANSWERS[0] if naive else rng.choice(ANSWERS)).format(s=sentence)
            else:
                key = foreign_key(passage, [p.text for p in item.others], rng)
                if outcome == "unanswerable":
                    query = question_about(key, rng, item.axes)
                    answer = rng.choice(UNANSWERABLE).format(key=key, de_key=with_de(key))
                else:
                    fill = {"np": question.key, "key": key, "a_key": with_a(key)}
                    query = rng.choice(FALSE_PREMISE_QUERIES).format(**fill)
                    answer = rng.choice(FALSE_PREMISE_ANSWERS).format(s=sentence, **fill)
        else:
            parsed = parse_json_reply(reply, ("query", "answer"))
            query, answer = parsed["query"], parsed["answer"]
        messages = [*qa_messages(passage, query), {"role": "assistant", "content": answer}]
        meta = {"query": query, "outcome": outcome, "key": key}
        if reply is not None:
            meta["reply"] = reply
        seeds = [item.passage] + ([p for p in item.others if key and key in p.text][:1])
        return Draft(messages, meta, seeds, generator=generator_id)

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]:
        query, outcome = draft.meta["query"], draft.meta["outcome"]
        answer = draft.messages[-1]["content"]
        checks = {"format": 0 < len(query) <= MAX_QUERY_CHARS
                  and 0 < len(answer) <= MAX_ANSWER_CHARS}
        passage = item.passage.text
        if outcome == "answerable":
            checks["grounded"] = overlap(answer, passage) >= config.qa.min_overlap
            checks["not_refusal"] = not is_refusal(answer)
        elif outcome == "unanswerable":
            checks["is_refusal"] = is_refusal(answer)
            checks["subject_absent"] = _subject_absent(draft.meta["key"], passage)
        else:
            checks["is_correction"] = is_correction(answer)
            checks["premise_absent"] = _subject_absent(draft.meta["key"], passage)
        return checks

    def generated_text(self, row: dict) -> str:
        return json.loads(row["meta"])["query"] + "\n" + row["messages"][-1]["content"]


def central_sentences(passage: str, k: int) -> list[str]:
    """The `k` sentences sharing the most content words with the rest of the passage, in
    passage order: an extractive summary."""
    found = sentences(passage)
    words = [set(content_words(s)) for s in found]
    scores = [(len(w & set().union(*(words[:i] + words[i + 1:]))), -i)
              for i, w in enumerate(words)]
    best = sorted(range(len(found)), key=lambda i: scores[i], reverse=True)[:k]
    return [found[i] for i in sorted(best)]


class SummaryTask:
    name = "summary"

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None:
        if not config.uses_llm(self.name) or item.axes.get("outcome") == "false_premise":
            return None
        instruction = summary_instruction(item.axes, item.mode == "naive")
        return GenRequest.from_chat(summary_messages(item.passage.text, instruction),
                                    max_tokens=config.summary.max_tokens,
                                    temperature=config.summary.temperature,
                                    seed=item.seed % 2**31)

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft:
        passage = item.passage.text
        naive = item.mode == "naive"
        axes = {} if naive else item.axes
        rng = random.Random(item.seed)
        outcome = axes.get("outcome", "summary")
        key = None
        if outcome == "false_premise":
            key = foreign_key(passage, [p.text for p in item.others], rng)
            own = [np for s in sentences(passage) for np in noun_phrases(s)] or ["autre chose"]
            np = rng.choice(own)
            instruction = f"Résume ce que le texte dit {with_de(key)}."
            answer = rng.choice(SUMMARY_FALSE_PREMISE).format(
                key=key, de_key=with_de(key), np=np, de_np=with_de(np))
            generator_id = "programmatic"
        else:
            instruction = summary_instruction(axes, naive)
            if reply is None:
                generator_id = "programmatic"
                n = len(sentences(passage))
                length = axes.get("length", "une phrase")
                k = 1 if length == "une phrase" else 2 if length == "trente mots" else 3
                chosen = central_sentences(passage, max(1, min(k, n - 1)))
                style = axes.get("style", "prose")
                answer = "\n".join(f"- {s}" for s in chosen) if style == "puces" else \
                    " ".join(chosen)
                if style == "titre":
                    title = (noun_phrases(chosen[0]) or ["Résumé"])[0]
                    answer = f"{title[0].upper()}{title[1:]}\n\n{answer}"
            else:
                answer = reply.strip()
        messages = [*summary_messages(passage, instruction),
                    {"role": "assistant", "content": answer}]
        meta = {"query": instruction, "outcome": outcome, "key": key}
        if reply is not None:
            meta["reply"] = reply
        seeds = [item.passage] + ([p for p in item.others if key and key in p.text][:1])
        return Draft(messages, meta, seeds, generator=generator_id)

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]:
        answer = draft.messages[-1]["content"]
        passage = item.passage.text
        checks = {"format": 0 < len(answer.strip()) <= MAX_ANSWER_CHARS}
        if draft.meta["outcome"] == "false_premise":
            checks["is_correction"] = is_correction(answer)
            checks["premise_absent"] = _subject_absent(draft.meta["key"], passage)
            return checks
        checks["shorter"] = len(answer) <= config.summary.max_ratio * len(passage)
        checks["grounded"] = overlap(answer, passage) >= config.summary.min_overlap
        checks["not_refusal"] = not is_refusal(answer)
        if item.mode == "controlled" and item.axes.get("length") == "une phrase":
            checks["one_sentence"] = len(sentences(answer.replace("\n", " "))) <= 1
        return checks

    def generated_text(self, row: dict) -> str:
        return row["messages"][-1]["content"]
