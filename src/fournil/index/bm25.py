"""The default retriever: BM25 (Lucene's variant, k1 1.2, b 0.75, as tantivy and
Elasticsearch) computed by bm25s over the terms of fournil's French analyzer.

Why bm25s: numpy only (PyStemmer aside), the same wheel on every Python, plain `.npy` and
JSON files memory-mapped in milliseconds, and on the bundled corpus it ties tantivy's quality
(bench/index_bench.py). bm25s scores every passage for every query (numpy over its sparse
matrix), so queries cost O(passages): ~0.3 ms at 7,500 passages, ~12 ms at 75,000; past a
million passages, tantivy or a search engine is the tool (docs/index.md).

bm25s is handed term ids from our analyzer, never its own tokenizer, so the analyzer and
its version are fournil's to record. Its files do not detect corruption (50 zeroed bytes
loaded fine with changed scores): `fournil.index.store` checks their sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import bm25s
import numpy as np

from fournil.index.analyzer import analyze
from fournil.index.passages import Passage, title_and_text
from fournil.index.retriever import Hit, distinct

# bm25s sets its own logger to DEBUG when imported: its internals would print in fournil's log
logging.getLogger("bm25s").setLevel(logging.WARNING)

K1, B = 1.2, 0.75
FOLDER = "bm25s"
# identical texts are skipped after scoring: look at this many candidates per hit wanted
_CANDIDATES_PER_HIT = 4


class BM25Retriever:
    name = "bm25s"
    analyzer = staticmethod(analyze)  # text -> terms (bench/index_bench.py swaps it)

    def __init__(self) -> None:
        self.passages: Sequence[Passage] = []
        self.bm25: bm25s.BM25 | None = None
        self.vocab: dict[str, int] = {}

    def build(self, passages: Sequence[Passage]) -> None:
        self.passages = passages
        self.vocab = {}
        ids = [[self.vocab.setdefault(t, len(self.vocab))
                for t in self.analyzer(title_and_text(p))] for p in passages]
        self.bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
        self.bm25.index(bm25s.tokenization.Tokenized(ids, self.vocab), show_progress=False)
        self.vocab = self.bm25.vocab_dict

    def save(self, folder: Path) -> list[Path]:
        assert self.bm25 is not None, "build or load first"
        out = Path(folder) / FOLDER
        self.bm25.save(str(out), show_progress=False)
        return sorted(p for p in out.rglob("*") if p.is_file())

    @classmethod
    def load(cls, folder: Path, passages: Sequence[Passage]) -> BM25Retriever:
        retriever = cls()
        retriever.bm25 = bm25s.BM25.load(str(Path(folder) / FOLDER), mmap=True,
                                         show_progress=False)
        retriever.vocab = retriever.bm25.vocab_dict
        retriever.passages = passages
        n = retriever.bm25.scores["num_docs"]
        if n != len(passages):
            raise ValueError(f"{folder}: the BM25 index has {n} documents for "
                             f"{len(passages)} passages")
        return retriever

    def term_ids(self, query: str) -> list[int]:
        """The query's terms that some passage has (an unknown id would be an error)."""
        return [self.vocab[t] for t in self.analyzer(query) if t in self.vocab]

    def search(self, query: str, k: int) -> list[Hit]:
        ids = self.term_ids(query)
        if not ids or k <= 0:
            return []
        scores = self.bm25.get_scores_from_ids(ids)
        n = min(len(scores), k * _CANDIDATES_PER_HIT)
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties in passage order
        return distinct([(int(i), float(scores[i])) for i in top], self.passages, k)

    def document_frequencies(self, terms: Sequence[str]) -> list[int]:
        # the scores matrix is compressed by term: a term's passages are one slice of it
        indptr = self.bm25.scores["indptr"]
        return [int(indptr[i + 1] - indptr[i]) if (i := self.vocab.get(t)) is not None else 0
                for t in terms]

    def versions(self) -> dict[str, str]:
        return {"bm25s": version("bm25s"), "PyStemmer": version("PyStemmer")}
