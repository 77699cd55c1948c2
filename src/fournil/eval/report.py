"""The comparison report: one markdown page with a table (one row per model) and plots.

`write_report(results, out_dir)` takes `fournil.eval.tasks.evaluate`'s results and writes:

    report.md               the table, per-source and per-language bits-per-byte, plots
    results.json            every score, without the per-item outputs
    items/<model>/<task>.jsonl   what each model answered, item by item (and rejections)
    loss.png                training loss and validation bpb against step, for the models
                            whose run folder has a pretrain/ or sft/ metrics.jsonl
    bpb_by_source.png, bpb_by_language.png, tasks.png

Plots are drawn with matplotlib's object API on the Agg canvas (no display, no global
pyplot state).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

# The columns of the table, per task kind: (score, label, lower is better)
HEADLINES = {
    "bpb": [("bpb", "bpb", True)],
    "mc": [("acc", "acc", False), ("acc_norm", "acc_norm", False)],
    "ocr": [("cer_before", "CER before", True), ("cer_after", "CER after", True),
            ("wer_after", "WER after", True), ("worse", "worse", True)],
    "rag": [("all_verbatim", "verbatim", False), ("with_quote", "quoted", False),
            ("precision", "precision", False), ("recall", "recall", False),
            ("refusal", "refusal", False)],
    "copy": [("loss_first", "1st read loss", True), ("loss_second", "2nd read loss", True),
             ("accuracy_second", "2nd read acc", False)],
    "ask": [("recall@3", "R@3", False), ("mrr", "MRR", False), ("verbatim", "verbatim", False),
            ("verbatim_constrained", "verbatim constrained", False),
            ("citation_precision", "cite P", False), ("citation_recall", "cite R", False),
            ("correct", "correct", False), ("refusal", "refusal", False)],
}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _columns(results: Sequence[dict]) -> list[tuple[str, str, str]]:
    """(task name, score, header) for every headline score of every task, in task order."""
    columns, seen = [], set()
    for result in results:
        for name, scores in result["tasks"].items():
            if name in seen:
                continue
            seen.add(name)
            for key, label, _ in HEADLINES[scores["kind"]]:
                header = label if name == "bpb" else f"{name} {label}"
                columns.append((name, key, header))
    return columns


def format_table(results: Sequence[dict]) -> str:
    """The markdown table: one row per model, one column per headline score."""
    columns = _columns(results)
    header = ["model", "parameters", *(h for _, _, h in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["model"], f"{r['parameters']:,}"]
        for name, key, _ in columns:
            cells.append(_fmt(r["tasks"].get(name, {}).get(key, float("nan"))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find_metrics(model_path: str | Path) -> dict[str, Path]:
    """The training logs of the run a model folder belongs to: {"pretrain"|"sft": path}.
    A model is `<run>/export`, `<run>/<stage>/checkpoints/step-N` or a stage folder, so the
    run is looked for up to three folders up."""
    folder = Path(model_path).resolve()
    for run in [folder, *list(folder.parents)[:3]]:
        found = {stage: run / stage / "metrics.jsonl" for stage in ("pretrain", "sft")
                 if (run / stage / "metrics.jsonl").exists()}
        if found:
            return found
    return {}


def read_metrics(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
    return rows


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grouped_bars(path: Path, groups: list[str], series: dict[str, list[float]],
                  ylabel: str, title: str) -> Path:
    fig = _figure(max(6.0, 1.2 * len(groups) * max(1, len(series)) ** 0.5), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return path


def plot_bpb(results: Sequence[dict], key: str, path: Path) -> Path | None:
    """Bars of bits-per-byte by `key` ("by_source" or "by_language"), one colour a model."""
    with_bpb = [r for r in results if "bpb" in r["tasks"]]
    if not with_bpb:
        return None
    groups = sorted({g for r in with_bpb for g in r["tasks"]["bpb"][key]})
    series = {r["model"]: [r["tasks"]["bpb"][key].get(g, {}).get("bpb", float("nan"))
                           for g in groups] for r in with_bpb}
    what = key.removeprefix("by_")
    return _grouped_bars(path, groups, series, "bits per byte (lower is better)",
                         f"Held-out bits per byte by {what}")


def plot_tasks(results: Sequence[dict], path: Path) -> Path | None:
    """Bars of the task scores that are rates in [0, 1] (accuracies, error rates, shares)."""
    columns = [c for c in _columns(results) if not c[0] == "bpb"]
    if not columns:
        return None
    series = {r["model"]: [r["tasks"].get(name, {}).get(key, float("nan"))
                           for name, key, _ in columns] for r in results}
    return _grouped_bars(path, [h for _, _, h in columns], series, "score",
                         "Task scores (error rates: lower is better)")


def plot_losses(curves: dict[str, list[dict]], path: Path) -> Path | None:
    """Training loss and validation bpb against step; `curves` is {label: metrics rows}."""
    if not curves:
        return None
    fig = _figure(10.0, 4.0)
    loss_ax, bpb_ax = fig.subplots(1, 2)
    for label, rows in curves.items():
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        val = [(r["step"], r["val_bpb"]) for r in rows if "val_bpb" in r]
        if train:
            loss_ax.plot(*zip(*train, strict=True), label=label)
        if val:
            bpb_ax.plot(*zip(*val, strict=True), marker="o", label=label)
    loss_ax.set(xlabel="step", ylabel="training loss (nats/token)", title="Training loss")
    bpb_ax.set(xlabel="step", ylabel="bits per byte", title="Validation bpb")
    for ax in (loss_ax, bpb_ax):
        if ax.lines:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def _bpb_table(results: Sequence[dict], key: str) -> str:
    with_bpb = [r for r in results if "bpb" in r["tasks"]]
    groups = sorted({g for r in with_bpb for g in r["tasks"]["bpb"][key]})
    if not groups:
        return ""
    lines = ["| model | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 1)]
    for r in with_bpb:
        by = r["tasks"]["bpb"][key]
        lines.append(f"| {r['model']} | "
                     + " | ".join(_fmt(by.get(g, {}).get("bpb", float("nan"))) for g in groups)
                     + " |")
    return "\n".join(lines)


def _nan_to_null(obj: object) -> object:
    """NaN (a score with nothing to average) as JSON null: NaN is not JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_null(v) for v in obj]
    return obj


def ocr_subset_table(results: Sequence[dict], seconds: bool = True) -> list[str]:
    """OCR correction per subset (ICDAR: monographs, periodicals): rates before and after,
    the shares of pieces made worse and better, and (`seconds`) the time spent answering,
    which a model card leaves out: it measures the machine. Markdown lines, none when no
    result has an OCR task."""
    rows = []
    for r in results:
        for name, s in r["tasks"].items():
            if s["kind"] != "ocr":
                continue
            time = [_fmt(s.get("generation_seconds", float("nan")))] if seconds else []
            for subset, t in [*s.get("by_subset", {}).items(), ("all", s)]:
                cells = [r["model"], name, subset, t.get("n", "–"),
                         *(_fmt(t.get(k, float("nan"))) for k in (
                             "cer_before", "cer_after", "wer_before", "wer_after", "worse",
                             "better")), *time]
                rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    if not rows:
        return []
    header = ["model", "task", "subset", "pieces", "CER before", "CER after", "WER before",
              "WER after", "worse", "better", *(["answering s (all)"] if seconds else [])]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


COPIES = 0.5  # second-read accuracy above which a model copies from its context


def _copying_notes(results: Sequence[dict]) -> list[str]:
    """A warning for each model that was scored on OCR or cited RAG but does not copy from
    its context: those tasks are mostly copying, so their scores are explained first by
    that (docs/evaluation.md, `copy`)."""
    notes = []
    for r in results:
        kinds = {scores["kind"]: scores for scores in r["tasks"].values()}
        copying = kinds.get("copy")
        if copying is None or not {"ocr", "rag"} & set(kinds):
            continue
        accuracy = copying.get("accuracy_second", float("nan"))
        if not accuracy >= COPIES:  # NaN too: no evidence that it copies
            notes.append(f"- **{r['model']}** predicts {100 * accuracy:.0f}% of the tokens of "
                         "a passage it has just read (the `copy` task; a model that copies "
                         "gets over 90%). OCR correction and verbatim quoting are copying, so "
                         "expect it to fail them until it learns to copy: usually a matter of "
                         "many more training tokens.")
    return ["", "## Copying from the context", "", *notes] if notes else []


def write_report(results: Sequence[dict], out_dir: str | Path) -> Path:
    """Writes the report folder (see the module docstring); returns report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slimmed = []
    for r in results:
        tasks = {}
        for name, scores in r["tasks"].items():
            items = scores.get("items", [])
            rejected = scores.get("rejected", [])
            if items or rejected:
                folder = out / "items" / _slug(r["model"])
                folder.mkdir(parents=True, exist_ok=True)
                with open(folder / f"{_slug(name)}.jsonl", "w", encoding="utf-8") as f:
                    for row in [*items, *({**x, "rejected": True} for x in rejected)]:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            tasks[name] = {k: v for k, v in scores.items() if k != "items"}
        slimmed.append({**r, "tasks": tasks})
    (out / "results.json").write_text(json.dumps(_nan_to_null(slimmed), indent=2,
                                                 ensure_ascii=False) + "\n", encoding="utf-8")

    runs: dict[tuple[str, Path], list[str]] = {}  # models of the same run share its curves
    for r in results:
        for stage, path in find_metrics(r["path"]).items():
            runs.setdefault((stage, path), []).append(r["model"])
    curves = {f"{' / '.join(models)} ({stage})": read_metrics(path)
              for (stage, path), models in runs.items()}
    plots = {
        "Training curves": plot_losses(curves, out / "loss.png"),
        "Bits per byte by source": plot_bpb(results, "by_source", out / "bpb_by_source.png"),
        "Bits per byte by language": plot_bpb(results, "by_language",
                                              out / "bpb_by_language.png"),
        "Task scores": plot_tasks(results, out / "tasks.png"),
    }

    md = ["# Evaluation", "", format_table(results), ""]
    md += [f"- **{r['model']}**: `{r['path']}` ({r['engine']})" for r in results]
    md += ["", "How each number is made (bpb windows, acc_norm, CER/WER normalisation, what "
           "counts as a refusal): docs/evaluation.md in the fournil repository."]
    for key, title in (("by_source", "by source"), ("by_language", "by language")):
        table = _bpb_table(results, key)
        if table:
            md += ["", f"## Held-out bits per byte {title}", "", table]
    md += _copying_notes(results)
    if ocr_rows := ocr_subset_table(results):
        md += ["", "## OCR correction", "", *ocr_rows]
    rejected = [(r["model"], name, len(s["rejected"])) for r in results
                for name, s in r["tasks"].items() if s.get("rejected")]
    if rejected:
        md += ["", "## Rejected items", ""]
        md += [f"- {model}, {name}: {n} (see items/)" for model, name, n in rejected]
    for title, path in plots.items():
        if path is not None:
            md += ["", f"## {title}", "", f"![{title}]({path.name})"]
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n", encoding="utf-8")
    return report
