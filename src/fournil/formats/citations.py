"""Cited answers: the markup, and the checks that a quote really is in the source it cites.

One format everywhere (synthetic RAG tasks, their verifier, SFT data, evaluation, serving):
sources are shown to the model as `<source id="N">text</source>` blocks, and the answer
quotes them as `<ref name="N">verbatim passage</ref>`, the markup of Pleias-RAG. A quote is
verbatim when, after collapsing runs of whitespace, it is a substring of the cited source:
line breaks and double spaces are layout, every other character must match.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

REF = re.compile(r'<ref name="([^"<>]*)">(.*?)</ref>', re.S)
SOURCE = re.compile(r'<source id="([^"<>]*)">\n?(.*?)\n?</source>', re.S)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Citation:
    source_id: str
    quote: str


def render_sources(sources: Sequence[tuple[str, str]]) -> str:
    """(id, text) pairs as the `<source>` blocks a prompt shows the model."""
    return "\n\n".join(f'<source id="{sid}">\n{text.strip()}\n</source>' for sid, text in sources)


def parse_sources(prompt: str) -> list[tuple[str, str]]:
    """The (id, text) pairs of the `<source>` blocks in a prompt (`render_sources`' inverse)."""
    return [(m.group(1).strip(), m.group(2)) for m in SOURCE.finditer(prompt)]


def parse_citations(answer: str) -> list[Citation]:
    """Every `<ref name="N">…</ref>` in an answer, in order."""
    return [Citation(m.group(1).strip(), m.group(2)) for m in REF.finditer(answer)]


def squash(text: str) -> str:
    """Whitespace collapsed to single spaces, ends stripped: how quotes are compared."""
    return _SPACES.sub(" ", text).strip()


def is_verbatim(quote: str, source: str) -> bool:
    q = squash(quote)
    return bool(q) and q in squash(source)


@dataclass
class CitationCheck:
    """What one answer's citations are worth against its sources and the gold source ids."""

    quotes: int = 0
    verbatim: int = 0
    cited: list[str] = field(default_factory=list)  # distinct source ids, in order of citation
    unknown: list[str] = field(default_factory=list)  # cited ids that are not among the sources
    gold: list[str] = field(default_factory=list)

    @property
    def all_verbatim(self) -> bool:
        return self.quotes > 0 and self.verbatim == self.quotes

    @property
    def gold_cited(self) -> bool:
        return not self.gold or any(g in self.cited for g in self.gold)

    @property
    def precision(self) -> float:
        """Share of the cited sources that are gold (1.0 when nothing is cited: nothing wrong)."""
        if not self.cited:
            return 1.0
        return sum(c in self.gold for c in self.cited) / len(self.cited)

    @property
    def recall(self) -> float:
        """Share of the gold sources that are cited (1.0 when there is no gold source)."""
        if not self.gold:
            return 1.0
        return sum(g in self.cited for g in self.gold) / len(self.gold)


def check_citations(answer: str, sources: Mapping[str, str],
                    gold: Collection[str] = ()) -> CitationCheck:
    """Count the answer's quotes that are verbatim in the source they cite, and which
    sources it cites against the `gold` ones (those that hold the answer)."""
    result = CitationCheck(gold=list(gold))
    for citation in parse_citations(answer):
        result.quotes += 1
        if citation.source_id not in result.cited:
            result.cited.append(citation.source_id)
        source = sources.get(citation.source_id)
        if source is None:
            if citation.source_id not in result.unknown:
                result.unknown.append(citation.source_id)
        elif is_verbatim(citation.quote, source):
            result.verbatim += 1
    return result
