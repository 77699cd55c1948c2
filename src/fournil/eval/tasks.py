"""Evaluation tasks by name, and one pass of several models over them.

A task is named on the command line (`fournil eval --task ...`) or in the recipe's
`[eval] tasks`:

    bpb          held-out bits-per-byte of the run, per source and per language (needs the
                 run's tokens and curate stages; `fournil.eval.bpb.document_bits_per_byte`)
    mc:PATH      multiple choice from a JSONL file (`fournil.eval.multiple_choice`)
    ocr[:PATH]   OCR correction (`fournil.eval.ocr`) on synth samples (a synth stage folder,
                 its samples/ folder or Parquet files) or on ICDAR post-OCR files (a .txt
                 file or a folder of them); without PATH, the run's synth stage
    rag[:PATH]   cited RAG (`fournil.eval.rag`) on synth samples; without PATH, the run's
    copy[:PATH]  in-context copying (`fournil.eval.copying`): shuffled word runs read twice,
                 from the run's held-out documents or from a text file (blank lines between
                 passages)
    ask[:PATH]   questions to the run's passage index (`fournil.eval.ask`): retrieval and
                 cited answers, from a JSONL file of questions with gold passages
                 (tests/data/ask-fr.jsonl) or from synth samples (without PATH, the run's);
                 needs the run's index stage

Options follow the path as a query string. OCR takes (`fournil.eval.ocr.OPTIONS`):

    shots=K          K synthetic examples in the prompt (the first K OCR samples of split
                     "train" of shots_from=PATH, else of the run's synth stage)
    copy             copy-biased decoding with the defaults of `fournil.eval.corrector`
    margin=M         copy bias of M nats (`fournil.model.copy_decoding`; 0 is greedy, inf a copy)
    span=N           a departure from the input rewrites at most N words
    max_change=C     the confidence rule: keep the input where the answer changes more than C
                     of its characters (none: off)
    word_edit=W      the word rule: keep the input in each stretch of words the answer
                     changes by more than W characters (none: off)
    every=N          one piece in N of each file (its first, then every Nth): a pass over
                     every file at 1/N of the cost, for a slow baseline

e.g. `ocr:data/icdar?shots=3`, `ocr:data/icdar?copy&max_change=none`. With `--report DIR`,
OCR and ask answers are recorded in DIR/journal/ as they come, and a pass started again
resumes.

Each task's data is read once and every model sees the same items: the first `max_items`
in file order (synth samples of split "eval" only, so no model is scored on a sample whose
seed document it may have been tuned on).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow.parquet as pq
import torch

from fournil.eval import ask, copying, multiple_choice, ocr, rag
from fournil.eval.bpb import document_bits_per_byte, held_out_documents
from fournil.eval.config import EVAL_TASK_KINDS as KINDS
from fournil.eval.config import EvalConfig
from fournil.eval.corrector import Corrector
from fournil.eval.journal import Journal
from fournil.eval.lm import ModelSpec, load_lm
from fournil.index.store import open_index

log = logging.getLogger("fournil")


@dataclass(frozen=True)
class Task:
    kind: str
    path: Path | None = None
    options: tuple[tuple[str, str], ...] = ()  # `?key=value&flag` after the path

    @property
    def name(self) -> str:
        """The task's column in the report: bpb, ocr, rag, or kind:<file stem> for a file
        that is not synth samples; then its options, as given."""
        if self.path is None or (self.kind in ("ocr", "rag", "ask") and _is_synth(self.path)):
            name = self.kind
        else:
            name = f"{self.kind}:{self.path.stem}"
        if self.options:
            name += "?" + "&".join(  # a few-shot source by its folder's name only
                k if not v else f"{k}={Path(v).name if k == 'shots_from' else v}"
                for k, v in self.options)
        return name

    @property
    def option(self) -> dict[str, str]:
        return dict(self.options)


# the options each kind takes; ask's prefix starts every answer (fournil ask --answer-prefix)
TASK_OPTIONS = {"ocr": ocr.OPTIONS, "ask": ("prefix",)}


@dataclass
class EvalSettings:
    run_dir: Path | None = None  # where the run's tokens/, curate/ and synth/ stages are
    seq_len: int = 512  # bpb window, in the model's tokens
    bpb_bytes_per_source: int = 100_000
    max_items: int = 200
    max_new_tokens: int = 256
    batch_tokens: int = 4096
    ocr_batch: int = 16  # OCR pieces answered together (and journaled together)
    journal_dir: Path | None = None  # where long tasks record their answers to resume

    @cached_property
    def held_out(self) -> list[dict]:
        """The run's held-out documents, read once for every task that scores them (bpb,
        copy): a scan of the curated documents."""
        return held_out_documents(_stage(self, "tokens"), _stage(self, "curate"),
                                  self.bpb_bytes_per_source)


def parse_task(spec: str, resolve: Callable[[str], Path] = Path) -> Task:
    """`bpb`, `mc:PATH`, `ocr[:PATH]`, `rag[:PATH]`, `copy[:PATH]`, then options as a query
    string (`ocr:PATH?shots=3&copy`, the kind's TASK_OPTIONS); `resolve` makes PATHs
    absolute (a recipe's paths are relative to the recipe file)."""
    spec_, _, query = spec.partition("?")
    kind, _, path = spec_.partition(":")
    if kind not in KINDS:
        raise ValueError(f"task {spec!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "bpb" and path:
        raise ValueError(f"task {spec!r}: bpb takes no path (it reads the run's stages)")
    if kind == "mc" and not path:
        raise ValueError(f"task {spec!r}: mc needs a JSONL file, e.g. mc:data/arc-fr.jsonl")
    options = tuple(tuple(o.partition("=")[::2]) for o in query.split("&") if o)
    known = TASK_OPTIONS.get(kind, ())
    for key, _ in options:
        if key not in known:
            raise ValueError(f"task {spec!r}: unknown option {key!r} (known for {kind}: "
                             f"{', '.join(known) or 'none'})")
    options = tuple((k, str(resolve(v)) if k == "shots_from" else v) for k, v in options)
    if kind == "ocr":
        try:
            ocr.correction_from_options(dict(options))
            ocr.every_nth_piece([], int(dict(options).get("every", 1)))
        except ValueError as e:
            raise ValueError(f"task {spec!r}: {e}") from None
    return Task(kind, resolve(path) if path else None, options)


def _is_synth(path: Path) -> bool:
    return path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet")))


def read_synth_samples(path: str | Path, task: str, split: str = "eval") -> list[dict]:
    """Synth samples of `task` and `split` (meta parsed from JSON) from a synth stage folder
    (its samples/, never rejected/), a folder of Parquet files or one file."""
    path = Path(path)
    if path.is_dir():
        root = path / "samples" if (path / "samples").is_dir() else path
        files = sorted(p for p in root.rglob("*.parquet") if "rejected" not in p.parts)
    else:
        files = [path]
    rows = []
    for file in files:
        table = pq.read_table(file)
        missing = {"id", "task", "split", "meta"} - set(table.column_names)
        if missing:
            raise ValueError(f"{file}: not synth samples (no {', '.join(sorted(missing))} "
                             "column)")
        for row in table.select(["id", "task", "split", "meta"]).to_pylist():
            if row["task"] == task and row["split"] == split:
                try:
                    row["meta"] = json.loads(row["meta"])
                except (TypeError, json.JSONDecodeError) as e:
                    raise ValueError(f"{file}: sample {row['id']}: meta is not JSON: {e}") from None
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no {task!r} samples of split {split!r}")
    return rows


def _stage(settings: EvalSettings, name: str) -> Path:
    if settings.run_dir is None:
        raise ValueError(f"this task reads the run's {name} stage: give a run (recipe or "
                         "--run-dir) or a path")
    path = settings.run_dir / name
    if not (path / "manifest.json").exists():
        raise FileNotFoundError(f"{path}: no completed {name} stage")
    return path


def default_tasks(run_dir: str | Path) -> list[Task]:
    """What a run can be scored on: bpb and copy when its tokens and curate stages are
    complete, ocr and rag when its synth stage has eval samples of that task."""
    run_dir = Path(run_dir)
    tasks = []
    if all((run_dir / s / "manifest.json").exists() for s in ("tokens", "curate")):
        tasks += [Task("bpb"), Task("copy")]
    synth = run_dir / "synth"
    if (synth / "manifest.json").exists():
        for kind in ("ocr", "rag"):
            try:
                read_synth_samples(synth, kind)
            except ValueError:
                continue
            tasks.append(Task(kind))
    return tasks


def select_tasks(config: EvalConfig, run_dir: Path, requested: Sequence[str] = (),
                 resolve: Callable[[str], Path] = Path) -> list[Task]:
    """What to score: the verb's --task list, else the recipe's `[eval] tasks` (paths relative
    to the recipe, through `resolve`), else what the run has (`default_tasks`)."""
    if requested:
        return [parse_task(t) for t in requested]
    if config.tasks:
        return [parse_task(t, resolve) for t in config.tasks]
    return default_tasks(run_dir)


def settings_for(config: EvalConfig, run_dir: Path, seq_len: int,
                 max_items: int | None = None, journal_dir: Path | None = None
                 ) -> EvalSettings:
    """The settings of an evaluation of `run_dir`'s models from the recipe's `[eval]`."""
    return EvalSettings(run_dir=run_dir, seq_len=seq_len,
                        bpb_bytes_per_source=config.bpb_bytes_per_source,
                        max_items=max_items or config.max_items,
                        max_new_tokens=config.max_new_tokens, journal_dir=journal_dir)


def load_data(task: Task, settings: EvalSettings) -> list:
    """What a task scores: documents (bpb), items (mc, rag), pairs (ocr) or passages
    (copy)."""
    n = settings.max_items
    if task.kind == "bpb":
        return settings.held_out
    if task.kind == "copy":
        if task.path is not None:
            texts = task.path.read_text(encoding="utf-8").split("\n\n")
            documents = [{"text": t} for t in texts if t.strip()]
        else:
            documents = settings.held_out
        return copying.copy_passages(documents, n)
    if task.kind == "mc":
        return multiple_choice.read_items(task.path)[:n]
    path = task.path or _stage(settings, "synth")
    if task.kind == "ask":
        if _is_synth(path):
            return ask.questions_from_samples(read_synth_samples(path, "rag"))[:n]
        return ask.read_questions(path)[:n]
    if task.kind == "ocr":
        every = int(task.option.get("every", 1))
        if _is_synth(path):
            return ocr.pairs_from_samples(read_synth_samples(path, "ocr"))[::every][:n]
        return ocr.every_nth_piece(ocr.read_icdar(path), every)[:n]
    return rag.items_from_samples(read_synth_samples(path, "rag"))[:n]


def score_task(lm, task: Task, data: list, settings: EvalSettings) -> dict:
    """One model's scores on one task's data."""
    if task.kind == "bpb":
        return document_bits_per_byte(lm, data, settings.seq_len, settings.batch_tokens)
    if task.kind == "mc":
        return multiple_choice.score_multiple_choice(lm, data,
                                                     batch_tokens=settings.batch_tokens)
    if task.kind == "ocr":
        corrector = ocr_corrector(lm, task, settings)
        return ocr.evaluate_ocr(corrector, data, ocr_journal(lm, task, corrector, settings),
                                settings.ocr_batch)
    if task.kind == "copy":
        return copying.evaluate_copying(lm, data, settings.batch_tokens)
    if task.kind == "ask":
        model = ask.QuotingLM(lm, task.option.get("prefix", ""))
        index = _stage(settings, "index")
        journal = task_journal(lm, task, settings, {
            "index": _fingerprint(index), "prefix": model.prefix,
            "max_new_tokens": settings.max_new_tokens})
        return ask.evaluate_ask(model, open_index(index), data,
                                max_new_tokens=settings.max_new_tokens, journal=journal)
    return rag.evaluate_rag(lm, data, settings.max_new_tokens)


def ocr_corrector(lm, task: Task, settings: EvalSettings) -> Corrector:
    """The task's `Correction`, with its few-shot examples: the first `shots` OCR samples of
    split "train" of synthetic pairs (`shots_from`, else the run's synth stage), never of the
    evaluated data."""
    correction = ocr.correction_from_options(task.option)
    examples = []
    if correction.shots:
        source = task.option.get("shots_from")
        rows = read_synth_samples(Path(source) if source else _stage(settings, "synth"), "ocr",
                                  split="train")
        examples = [(p.noisy, p.clean) for p in ocr.pairs_from_samples(rows)]
    return Corrector(lm, correction, examples, settings.max_new_tokens)


def _fingerprint(path: Path) -> list:
    """Names, sizes and times of a model's files: cheap, and changes when they do."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def ocr_journal(lm, task: Task, corrector: Corrector, settings: EvalSettings
                ) -> Journal | None:
    """Where the answers of `lm` on `task` are recorded (under settings.journal_dir), keyed
    by what changes them: the model's files, the data, the prompt and the decoding. The
    confidence rule is applied after, so tasks that differ by it share a journal."""
    return task_journal(lm, task, settings, {
        "examples": corrector.examples, "decoding": corrector.correction.decoding_key(),
        "max_new_tokens": corrector.max_new_tokens})


def task_journal(lm, task: Task, settings: EvalSettings, answers_key: dict
                 ) -> Journal | None:
    """Where the answers of `lm` on `task` are recorded (under settings.journal_dir), keyed
    by the model's files, the data and `answers_key` (what else changes an answer)."""
    if settings.journal_dir is None:
        return None
    key = {"model": str(getattr(lm, "path", lm.name)),
           "files": _fingerprint(Path(getattr(lm, "path", lm.name))),
           "data": str(task.path), **answers_key}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    stem = task.path.stem if task.path is not None else "synth"
    return Journal(settings.journal_dir / _slug(lm.name)
                   / f"{task.kind}-{stem}-{digest[:12]}.jsonl", key)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def evaluate(models: Sequence[str | ModelSpec], tasks: Sequence[Task],
             settings: EvalSettings, device: str = "cpu") -> list[dict]:
    """One result per model: {"model" (label), "path", "engine", "parameters", "tasks":
    {task name: {"kind", "seconds", ...scores, "items"}}}. Models are loaded one at a time."""
    specs = [m if isinstance(m, ModelSpec) else ModelSpec.parse(m) for m in models]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two models have the same label ({labels}): name them LABEL=PATH")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"a task is given twice ({names})")
    data = {t.name: load_data(t, settings) for t in tasks}
    results = []
    for spec in specs:
        lm = load_lm(spec, device)
        result = {"model": spec.label, "path": str(spec.path), "engine": type(lm).__name__,
                  "parameters": _parameters(lm), "tasks": {}}
        for task in tasks:
            started = time.time()
            log.info("eval %s: %s (%d items)", spec.label, task.name, len(data[task.name]))
            scores = score_task(lm, task, data[task.name], settings)
            result["tasks"][task.name] = {"kind": task.kind, **scores,
                                          "seconds": round(time.time() - started, 2)}
        results.append(result)
        del lm
    return results


def _parameters(lm) -> int:
    if hasattr(lm, "n_parameters"):  # an engine that is not a torch module counts its own
        return lm.n_parameters
    model: torch.nn.Module = lm.model
    return sum(p.numel() for p in model.parameters())
