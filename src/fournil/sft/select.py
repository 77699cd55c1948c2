"""Data selection before SFT: which chats are worth tuning on.

Formal filters first, cheapest first, each rejection with its reason:

    format:…              roles (data/chat.py `check_roles`): known roles, an optional system
                          message, user/assistant alternating, the assistant's last, none empty
    length:too_short      fewer tokens than `min_tokens` (the whole chat, as encoded)
    length:too_long       more than `max_tokens`, or than a packed row can hold
    citations:too_few     RAG samples with gold sources whose answer quotes fewer than
                          `min_citations` (an answer to a question its sources cannot answer
                          has no gold source and needs no quote)
    citations:too_many    RAG answers quoting more than `max_citations` times
    judge:low_score       an LLM judge scored the chat under `judge_threshold` (`llm_judge`
                          wraps fournil.synth.judge's 1-5 grades as a `Judge`)

The judge runs last, on what survived the rest, since it is by far the most expensive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from fournil.formats.citations import parse_citations
from fournil.sft.config import SelectConfig
from fournil.synth.judge import judge
from fournil.train.chats import Chat, Rejected, check_roles

Judge = Callable[[Sequence[Chat]], list[float]]  # chats -> scores in [0, 1]


def llm_judge(generator: object, max_tokens: int = 64) -> Judge:
    """A `Judge` from `fournil.synth.judge`: an LLM (any synth backend) grades each chat's
    last answer against what came before it from 1 to 5, mapped to [0, 1] ((s - 1) / 4); a
    reply without a score counts as 0."""
    def score(chats: Sequence[Chat]) -> list[float]:
        pairs = [(_prompt_text(c.messages[:-1]), c.messages[-1]["content"]) for c in chats]
        verdicts = judge(generator, pairs, max_tokens=max_tokens)
        return [0.0 if v.score is None else (v.score - 1) / 4 for v in verdicts]

    return score


def _prompt_text(messages: Sequence[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)



class SelectionReport(TypedDict):
    read: int
    kept: int
    rejected: int
    kept_share: float
    rejected_by_reason: dict[str, int]

@dataclass
class Selection:
    kept: list[Chat]
    kept_tokens: list[tuple[list[int], list[int]]]  # the kept chats encoded (ids, mask)
    rejected: list[Rejected]
    read: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def kept_share(self) -> float:
        return len(self.kept) / self.read if self.read else 0.0

    def report(self) -> SelectionReport:
        """Counts for the manifest: read = kept + rejected, exactly."""
        return {"read": self.read, "kept": len(self.kept), "rejected": len(self.rejected),
                "kept_share": round(self.kept_share, 4),
                "rejected_by_reason": dict(sorted(self.by_reason.items()))}


def _size_reason(chat: Chat, n_tokens: int, cfg: SelectConfig, row_tokens: int) -> str:
    if n_tokens < cfg.min_tokens:
        return "length:too_short"
    if n_tokens > row_tokens or (cfg.max_tokens and n_tokens > cfg.max_tokens):
        return "length:too_long"
    if chat.task == "rag":
        quotes = len(parse_citations(chat.messages[-1]["content"]))
        if chat.meta.get("gold", True) and quotes < cfg.min_citations:
            return "citations:too_few"
        if cfg.max_citations and quotes > cfg.max_citations:
            return "citations:too_many"
    return ""


def select_chats(chats: Sequence[Chat], encode: Callable[[list[dict]], tuple[list, list]],
                 cfg: SelectConfig, row_tokens: int, judge: Judge | None = None,
                 already_rejected: Sequence[Rejected] = ()) -> Selection:
    """Filter `chats` (encoded with `encode`, which gives (ids, mask)); `row_tokens` is the
    longest chat a packed row holds. `already_rejected` (rows the reader could not parse)
    count as read and rejected, so the report adds up over everything that was read."""
    if cfg.judge_threshold is not None and judge is None:
        raise ValueError("sft.select.judge_threshold is set but no judge was given "
                         "(pass one, or leave judge_threshold out)")
    rejected = list(already_rejected)
    survivors: list[tuple[Chat, tuple[list, list]]] = []
    for chat in chats:
        # a chat that is not well formed may not even encode as intended: check roles first
        if cfg.check_format and (reason := check_roles(chat.messages)):
            rejected.append(Rejected(chat.id, chat.where, reason))
            continue
        encoded = encode(chat.messages)
        if reason := _size_reason(chat, len(encoded[0]), cfg, row_tokens):
            rejected.append(Rejected(chat.id, chat.where, reason, f"{len(encoded[0])} tokens"))
            continue
        survivors.append((chat, encoded))
    if cfg.judge_threshold is not None and survivors:
        scores = judge([c for c, _ in survivors])
        if len(scores) != len(survivors):
            raise ValueError(f"the judge returned {len(scores)} scores for {len(survivors)} "
                             "chats")
        scored = list(zip(survivors, scores, strict=True))
        survivors = [s for s, score in scored if score >= cfg.judge_threshold]
        rejected += [Rejected(c.id, c.where, "judge:low_score", f"score {score:.3f}")
                     for (c, _), score in scored if score < cfg.judge_threshold]
    return Selection(kept=[c for c, _ in survivors], kept_tokens=[e for _, e in survivors],
                     rejected=rejected, read=len(chats) + len(already_rejected),
                     by_reason=dict(Counter(r.reason for r in rejected)))
