"""What the synth stage made, for a person judging it: `report.md` and `report.json`.

Per task: samples per split, rejections by reason with an example each, the acceptance rate
of every check, the diversity figures of the kept samples (and, with `compare_naive`, naive
and controlled generation side by side on the same seeds), per-axis coverage, the
generators, the derived licenses and the LLM requests made (and answered from the cache).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import TypedDict

from fournil.core.stage import write_json_atomic
from fournil.synth.axes import coverage
from fournil.synth.diversity import diversity
from fournil.synth.tasks import get_task

EXCERPT_CHARS = 300
FIGURES = ("distinct_1", "distinct_2", "distinct_3", "compression_ratio", "near_dup_rate")


def _excerpt(row: dict) -> str:
    meta = json.loads(row["meta"] or "{}")
    text = (row["messages"][-1]["content"] if row["messages"] else
            meta.get("reply") or meta.get("error") or "")
    text = " ".join(str(text).split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def _index(row: dict) -> int:
    return int(row["id"].split("-")[1][1:])  # "<task>-c000012-<hash>" -> 12



class TaskCounts(TypedDict):
    generated: int
    kept: int
    rejected: dict[str, int]  # reason (verify:<check>, parse:no_json, ...) -> samples
    by_split: dict[str, int]  # train / eval -> kept samples
    by_license: dict[str, int]  # derived license -> kept samples
    generators: dict[str, int]  # generator id -> kept samples
    llm: dict[str, int]  # requests, cached, failed, completion_tokens, judged

class TaskTally:
    def __init__(self, task: str, task_config: object) -> None:
        self.task, self.config = task, task_config
        self.generated = self.kept = 0
        self.rejected: Counter = Counter()
        self.by_split: Counter = Counter()
        self.by_license: Counter = Counter()
        self.generators: Counter = Counter()
        self.checks: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> [passed, seen]
        self.examples: dict[str, dict] = {}
        self.axes: list[dict] = []
        self.texts: list[tuple[int, str]] = []  # (item index, generated text) of kept samples
        self.naive_texts: list[tuple[int, str]] = []
        # what the generator wrote, kept or not (an LLM's reply, parsed or raw), per mode
        self.written: dict[str, list[tuple[int, str]]] = {"naive": [], "controlled": []}
        self.naive = Counter()
        self.llm: Counter = Counter()

    def add_llm(self, stats: dict) -> None:
        self.llm.update(stats)

    def add(self, row: dict, mode: str) -> None:
        kept = row["reason"] is None
        text = get_task(self.task).generated_text(row) if kept else ""
        if written := text or json.loads(row["meta"] or "{}").get("reply"):
            self.written[mode].append((_index(row), written))
        if mode == "naive":
            self.naive["generated"] += 1
            self.naive["kept"] += kept
            if kept:
                self.naive_texts.append((_index(row), text))
            return
        self.generated += 1
        for name, ok in json.loads(row["verification"] or "{}").items():
            self.checks[name][0] += bool(ok)
            self.checks[name][1] += 1
        if not kept:
            self.rejected[row["reason"]] += 1
            self.examples.setdefault(row["reason"], {"id": row["id"], "excerpt": _excerpt(row),
                                                     "verification": row["verification"]})
            return
        self.kept += 1
        self.by_split[row["split"]] += 1
        self.by_license[row["license"]] += 1
        self.generators[row["generator"]] += 1
        self.axes.append(json.loads(row["axes"]))
        self.texts.append((_index(row), text))

    def counts(self) -> TaskCounts:
        return {"generated": self.generated, "kept": self.kept, "rejected": dict(self.rejected),
                "by_split": dict(self.by_split), "by_license": dict(self.by_license),
                "generators": dict(self.generators), "llm": dict(self.llm)}

    def report(self) -> dict:
        out = self.counts()
        out["acceptance"] = {name: round(p / n, 4) for name, (p, n) in self.checks.items()}
        out["examples"] = self.examples
        out["diversity"] = diversity([t for _, t in self.texts])
        out["coverage"] = coverage(self.config.axes, self.axes)
        if self.naive["generated"]:
            n = self.naive["generated"]
            same_seeds = [t for i, t in self.texts if i < n]
            size = min(len(same_seeds), len(self.naive_texts))  # equal sizes: fair n-gram counts
            out["naive_comparison"] = {
                "seeds": n, "compared_texts": size,
                "acceptance": {"naive": round(self.naive["kept"] / n, 4),
                               "controlled": round(sum(i < n for i, _ in self.texts) / n, 4)},
                "naive": diversity([t for _, t in self.naive_texts][:size]),
                "controlled": diversity(same_seeds[:size])}
            naive_written = [t for _, t in self.written["naive"]]
            controlled_written = [t for i, t in self.written["controlled"] if i < n]
            size = min(len(naive_written), len(controlled_written))
            out["naive_comparison"]["written"] = {
                "compared_texts": size, "naive": diversity(naive_written[:size]),
                "controlled": diversity(controlled_written[:size])}
        return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_report(directory: Path, tasks: dict[str, dict]) -> None:
    write_json_atomic(Path(directory) / "report.json", tasks)
    md = ["# Synthetic data report", ""]
    md += _table(["task", "generated", "kept", "rejected", "train", "eval", "accepted"],
                 [[t, r["generated"], r["kept"], sum(r["rejected"].values()),
                   r["by_split"].get("train", 0), r["by_split"].get("eval", 0),
                   f"{r['kept'] / max(1, r['generated']):.0%}"] for t, r in tasks.items()])
    md += ["", "## Diversity of the kept samples", "",
           "distinct-n: unique word n-grams / all (higher: more diverse); compression: bytes / "
           "zlib bytes (higher: more repetitive); near-dup: share of near copies (MinHash).", ""]
    md += _table(["task", "texts", *FIGURES],
                 [[t, r["diversity"]["texts"], *(r["diversity"][f] for f in FIGURES)]
                  for t, r in tasks.items()])
    compared = {t: r["naive_comparison"] for t, r in tasks.items() if "naive_comparison" in r}
    if compared:
        md += ["", "## Naive vs controlled generation, same seeds and generator", "",
               "Naive: one fixed prompt per task, no axes. Figures over the same number of kept "
               "samples of each.", ""]
        rows = []
        for t, c in compared.items():
            for mode in ("naive", "controlled"):
                rows.append([t, mode, c["compared_texts"], f"{c['acceptance'][mode]:.0%}",
                             *(c[mode][f] for f in FIGURES)])
        md += _table(["task", "mode", "texts", "accepted", *FIGURES], rows)
        md += ["", "Everything the generator wrote on those seeds, kept or rejected (an LLM's "
               "reply as parsed, or raw when it did not parse): what the prompts alone change.",
               ""]
        rows = []
        for t, c in compared.items():
            for mode in ("naive", "controlled"):
                w = c["written"]
                rows.append([t, mode, w["compared_texts"], *(w[mode][f] for f in FIGURES)])
        md += _table(["task", "mode", "texts", *FIGURES], rows)
    for t, r in tasks.items():
        md += ["", f"## {t}", "", "Checks (acceptance rate among the samples verified):", ""]
        md += _table(["check", "passed"], [[c, f"{v:.1%}"] for c, v in r["acceptance"].items()])
        if r["rejected"]:
            md += ["", "Rejections:", ""]
            md += _table(["reason", "count", "example"],
                         [[reason, n, f"`{r['examples'][reason]['id']}`: "
                           + r["examples"][reason]["excerpt"].replace("|", "\\|")]
                          for reason, n in sorted(r["rejected"].items(), key=lambda x: -x[1])])
        md += ["", "Axis coverage (values used by kept samples):", ""]
        md += _table(["axis", "coverage", "counts"],
                     [[a, f"{c['coverage']:.0%}", ", ".join(f"{v}: {n}"
                                                           for v, n in c["counts"].items())]
                      for a, c in r["coverage"].items()])
        md += ["", "Generators: " + ", ".join(f"{g} ({n})" for g, n in r["generators"].items()),
               "Licenses: " + ", ".join(f"{lic} ({n})" for lic, n in r["by_license"].items())]
        if r["llm"]:
            llm = r["llm"]
            md += [f"LLM requests: {llm.get('requests', 0)} ({llm.get('cached', 0)} from the "
                   f"cache, {llm.get('failed', 0)} failed), {llm.get('completion_tokens', 0)} "
                   f"tokens generated; judged: {llm.get('judged', 0)}"]
    (Path(directory) / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
