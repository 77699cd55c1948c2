"""Counting what curation did, and the report a person reads to judge the filters.

`Tally` is filled by the driver as it writes the stage's output, in input order (so the
examples are the same on any executor), and turned into the manifest's counts and into
`report.md` / `report.json`: per source, documents read, kept and rejected by reason,
characters and words kept, languages, licenses, PII replaced, OCR-flagged documents, and a
few examples of each rejection reason.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import TypedDict

EXAMPLES_PER_REASON = 3
EXCERPT_CHARS = 240


class CurateSourceTally(TypedDict):
    read: int
    kept: int
    chars_kept: int
    words_kept: int
    ocr_flagged: int  # kept documents flagged as OCR-noisy (kept for correction)
    rejected: dict[str, int]  # reason -> documents
    languages: dict[str, int]  # detected language -> kept documents
    licenses: dict[str, int]  # SPDX id -> kept documents
    pii: dict[str, int]  # kind -> replacements in kept documents


class CurateCounts(TypedDict):
    read: int
    kept: int
    rejected: dict[str, int]
    by_license: dict[str, int]
    languages: dict[str, int]
    pii: dict[str, int]
    ocr_flagged: int
    chars_kept: int
    words_kept: int
    by_source: dict[str, CurateSourceTally]


def _source_tally() -> dict:
    return {"read": 0, "kept": 0, "chars_kept": 0, "words_kept": 0, "ocr_flagged": 0,
            "rejected": Counter(), "languages": Counter(), "licenses": Counter(),
            "pii": Counter()}


class Tally:
    def __init__(self) -> None:
        self.sources: dict[str, dict] = defaultdict(_source_tally)
        self.examples: dict[str, list[dict]] = defaultdict(list)

    def read(self, record: dict) -> None:
        self.sources[record["source"]]["read"] += 1

    def reject(self, record: dict, reason: str) -> None:
        self.sources[record["source"]]["rejected"][reason] += 1
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            text = record["text"] or ""
            self.examples[reason].append({
                "id": record["id"], "source": record["source"], "license": record["license"],
                "dup_of": record.get("dup_of"), "lang": record.get("lang"),
                "excerpt": text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")})

    def keep(self, record: dict) -> None:
        s = self.sources[record["source"]]
        s["kept"] += 1
        s["chars_kept"] += len(record["text"])
        s["words_kept"] += len(record["text"].split())
        s["licenses"][record["license"]] += 1
        s["languages"][record.get("lang") or "?"] += 1
        s["ocr_flagged"] += bool(record.get("ocr_flag"))
        s["pii"].update(json.loads(record.get("pii_counts") or "{}"))

    def counts(self) -> CurateCounts:
        by_source = {name: {k: dict(v) if isinstance(v, Counter) else v for k, v in s.items()}
                     for name, s in sorted(self.sources.items())}
        total = lambda key: sum(s[key] for s in self.sources.values())  # noqa: E731
        merged = lambda key: dict(sum((s[key] for s in self.sources.values()), Counter()))  # noqa: E731
        return {"read": total("read"), "kept": total("kept"), "rejected": merged("rejected"),
                "by_license": merged("licenses"), "languages": merged("languages"),
                "pii": merged("pii"), "ocr_flagged": total("ocr_flagged"),
                "chars_kept": total("chars_kept"), "words_kept": total("words_kept"),
                "by_source": by_source}


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def render_markdown(counts: dict, examples: dict[str, list[dict]]) -> str:
    lines = ["# Curation report", "",
             f"{counts['read']:,} documents read, {counts['kept']:,} kept, "
             f"{counts['read'] - counts['kept']:,} rejected; "
             f"{counts['words_kept']:,} words kept; {counts['ocr_flagged']:,} kept documents "
             f"flagged as OCR-noisy (kept for correction); PII replaced: "
             + (", ".join(f"{k} {v}" for k, v in sorted(counts["pii"].items())) or "none") + ".",
             "", "## By source", ""]
    lines += _table(
        ["source", "read", "kept", "rejected", "words kept", "languages", "licenses"],
        [[name, s["read"], s["kept"], sum(s["rejected"].values()), f"{s['words_kept']:,}",
          ", ".join(f"{k} {v}" for k, v in sorted(s["languages"].items())),
          ", ".join(f"{k} {v}" for k, v in sorted(s["licenses"].items()))]
         for name, s in counts["by_source"].items()])
    lines += ["", "## Rejections by reason", ""]
    reasons = sorted(counts["rejected"].items(), key=lambda kv: -kv[1])
    lines += _table(["reason", "documents"] + list(counts["by_source"]),
                    [[r, n] + [s["rejected"].get(r, 0) for s in counts["by_source"].values()]
                     for r, n in reasons]) if reasons else ["(none)"]
    for reason, _ in reasons:
        lines += ["", f"### `{reason}`", ""]
        for ex in examples.get(reason, []):
            extra = f" (duplicate of `{ex['dup_of']}`)" if ex.get("dup_of") else ""
            excerpt = " ".join(ex["excerpt"].split())
            lines.append(f"- `{ex['id']}` [{ex['license']}]{extra}: {excerpt}")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, counts: dict, examples: dict[str, list[dict]]) -> None:
    (directory / "report.json").write_text(json.dumps(
        {"counts": counts, "examples": examples}, indent=2, ensure_ascii=False) + "\n")
    (directory / "report.md").write_text(render_markdown(counts, examples))
