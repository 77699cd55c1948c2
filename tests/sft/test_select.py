"""Data selection before SFT: every formal filter with its reason, citation bounds on RAG
answers (none needed when nothing can be cited), the judge hook, and counts that add up."""

from __future__ import annotations

import pytest

from fournil.formats.chatml import ChatEncoder
from fournil.sft.config import SelectConfig
from fournil.sft.select import llm_judge, select_chats
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import Chat, Rejected, check_roles, encode_chat


@pytest.fixture(scope="module")
def encode(tiny_tokenizer_dir):
    encoder = ChatEncoder(load_tokenizer(tiny_tokenizer_dir))
    return lambda messages: encode_chat(encoder, messages)


def chat(chat_id: str, *turns: tuple[str, str], task: str = "qa", meta: dict | None = None
         ) -> Chat:
    return Chat(chat_id, [{"role": r, "content": c} for r, c in turns], task=task,
                where=f"data.jsonl:{chat_id}", meta=meta or {})


Q = ("user", "Que vendait la boulangère du village ?")
A = ("assistant", "Des croissants encore tièdes, chaque matin.")
QUOTE = '<ref name="1">des croissants encore tièdes</ref>'


@pytest.mark.parametrize(("turns", "reason"), [
    ([("system", "Tu es utile."), Q, A], ""),
    ([Q, A, Q, A], ""),
    ([Q], "format:last_not_assistant"),
    ([("system", "s")], "format:last_not_assistant"),
    ([A, Q, A], "format:roles_do_not_alternate"),
    ([Q, Q, A], "format:roles_do_not_alternate"),
    ([("tool", "x"), Q, A], "format:unknown_role"),
    ([Q, ("assistant", "  ")], "format:empty_message"),
])
def test_roles(turns, reason):
    assert check_roles([{"role": r, "content": c} for r, c in turns]) == reason


def test_each_filter_rejects_with_its_reason_and_counts_add_up(encode):
    chats = [
        chat("good", Q, A),
        chat("bad-roles", Q, Q, A),
        chat("short", ("user", "?"), ("assistant", "Oui.")),
        chat("long", Q, ("assistant", "Des croissants. " * 40)),
        chat("rag-ok", Q, ("assistant", f"Elle vendait {QUOTE}."), task="rag",
             meta={"gold": ["1"]}),
        chat("rag-uncited", Q, A, task="rag", meta={"gold": ["1"]}),
        chat("rag-refusal", Q, ("assistant", "Les sources ne le disent pas."), task="rag",
             meta={"gold": []}),  # nothing to cite: no quote needed
        chat("rag-overcited", Q, ("assistant", '<ref name="1">tièdes</ref>' * 4), task="rag",
             meta={"gold": ["1"]}),
    ]
    unreadable = [Rejected("data.jsonl:9", "data.jsonl:9", "read:bad_json")]
    cfg = SelectConfig(min_tokens=30, max_tokens=200, min_citations=1, max_citations=3)
    selection = select_chats(chats, encode, cfg, row_tokens=257, already_rejected=unreadable)
    assert [c.id for c in selection.kept] == ["good", "rag-ok", "rag-refusal"]
    assert {r.id: r.reason for r in selection.rejected} == {
        "data.jsonl:9": "read:bad_json", "bad-roles": "format:roles_do_not_alternate",
        "short": "length:too_short", "long": "length:too_long",
        "rag-uncited": "citations:too_few", "rag-overcited": "citations:too_many"}
    report = selection.report()
    assert report["read"] == 9 == report["kept"] + report["rejected"]
    assert report["kept_share"] == pytest.approx(3 / 9, abs=1e-4)
    assert sum(report["rejected_by_reason"].values()) == report["rejected"]
    assert [ids for ids, _ in selection.kept_tokens] == [encode(c.messages)[0]
                                                         for c in selection.kept]
    # a chat longer than a packed row is too long even without max_tokens
    tight = select_chats(chats[:1], encode, SelectConfig(min_tokens=0), row_tokens=20)
    assert tight.by_reason == {"length:too_long": 1}


def test_judge_keeps_what_it_scores_high_enough(encode):
    chats = [chat(f"c{i}", Q, ("assistant", f"Réponse numéro {i}, des croissants."))
             for i in range(4)]
    seen = []

    def judge(batch):
        seen.extend(c.id for c in batch)
        return [0.2, 0.9, 0.5, 0.7]

    cfg = SelectConfig(min_tokens=0, judge_threshold=0.6)
    selection = select_chats(chats, encode, cfg, row_tokens=257, judge=judge)
    assert seen == ["c0", "c1", "c2", "c3"]
    assert [c.id for c in selection.kept] == ["c1", "c3"]
    assert selection.by_reason == {"judge:low_score": 2}
    # the judge only sees what the cheap filters let through
    seen.clear()
    with pytest.raises(ValueError, match="4 scores for 3 chats"):
        select_chats([*chats[:3], chat("bad", Q)], encode, cfg, row_tokens=257, judge=judge)
    with pytest.raises(ValueError, match="no judge"):
        select_chats(chats, encode, cfg, row_tokens=257)


class GradingLLM:
    """An external LLM's replies, scripted: grades 5 an answer that mentions croissants,
    2 one that does not, and replies without a score to one that says "bof"."""

    id = "scripted"

    def generate(self, requests, progress=True):
        from fournil.synth.generator import GenResult
        replies = []
        for request in requests:
            text = request.messages[-1][1].split("### Réponse à évaluer")[1]
            replies.append(GenResult("Pas d'avis." if "bof" in text else
                                     "Note : 5" if "croissants" in text else "Note : 2"))
        return replies


def test_llm_judge_maps_grades_to_scores(encode):
    chats = [chat("good", Q, A), chat("off", Q, ("assistant", "Du pain de seigle.")),
             chat("mute", Q, ("assistant", "bof"))]
    assert llm_judge(GradingLLM())(chats) == [1.0, 0.25, 0.0]
    selection = select_chats(chats, encode, SelectConfig(min_tokens=0, judge_threshold=0.5),
                             row_tokens=257, judge=llm_judge(GradingLLM()))
    assert [c.id for c in selection.kept] == ["good"]
