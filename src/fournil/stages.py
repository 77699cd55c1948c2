"""The pipeline: every stage, in the order `fournil bake` runs them.

This list is the one place a stage is declared. A stage's name is its output folder under the
run (`runs/<recipe>/<name>/`), its CLI verb (`fournil <name>`), its recipe section (`[<name>]`,
when it has settings) and its key in the model card. From it come: what bake runs and in which
order, the run layout, the recipe's sections and its `stages` check, the CLI's verbs and their
flags (a table of verbs, as litgpt's CLI is one), and the card's list of stages.

Each stage lives in its own package, whose `stage.py` has the entry point every caller uses,
`run(ctx: StageContext) -> dict | None` (the stage's manifest; None when stopped early to be
resumed), and whose `config.py` holds its settings, standard library only. Importing this
module imports those config modules and nothing heavy: the stage code is imported by name
(`module`) when it runs, so `fournil --help` and loading a recipe stay fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fournil.base.config import BaseConfig
from fournil.correct.config import CorrectConfig
from fournil.curate.config import CurateConfig
from fournil.decontam.config import DecontamConfig
from fournil.dpo.config import DPOConfig
from fournil.eval.config import EvalConfig
from fournil.index.config import IndexConfig
from fournil.ingest.config import FORMATS, IngestConfig
from fournil.pretrain.config import PretrainConfig
from fournil.sft.config import SFTConfig
from fournil.synth.config import SynthConfig
from fournil.tokenizer.config import TokenizerConfig
from fournil.tokens.config import TokensConfig


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a verb: `argparse.add_argument(*names, **options)`."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def flag(*names: str, **options: Any) -> Flag:
    return Flag(names, options)


def _out(name: str) -> Flag:
    return flag("--out", help=f"output folder (default <run>/{name})")


def _input(name: str, what: str = "input") -> Flag:
    return flag(f"--{what}", help=f"{name} folder (default <run>/{name})")


_STOP_AFTER = flag("--stop-after", type=int, metavar="STEP",
                   help="checkpoint and exit after this step; the same command continues")


@dataclass(frozen=True)
class StageSpec:
    name: str  # output folder, verb, recipe section, card key
    module: str  # where `run(ctx)` is
    help: str  # one line, for `fournil --help`
    description: str = ""  # for `fournil <verb> --help`
    config: type | None = None  # the recipe section `[<name>]`; None: the stage has none
    optional: bool = False  # runs only when the recipe's `stages` names it
    flags: tuple[Flag, ...] = ()
    aliases: tuple[str, ...] = ()  # other names of its verb

    def entry(self):
        """The stage's `run(ctx)`, imported now."""
        return importlib.import_module(self.module).run


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "ingest", "fournil.ingest.stage", config=IngestConfig,
        help="read raw documents into Parquet shards with provenance",
        description=f"Read {', '.join(FORMATS)} files (JSONL also .gz/.zst) or folders of them "
        "into document shards; licenses are normalised to SPDX ids. A damaged file is one "
        "rejected record with a reason, and the run goes on. Without PATHs the recipe's sources "
        "are read.",
        flags=(
            flag("paths", nargs="*", help="files or folders to ingest instead of the recipe's"),
            flag("--name", help="source name for PATHs (else the folder's source.toml)"),
            flag("--license", help="license of PATHs, raw or SPDX (else source.toml)"),
            flag("--format", choices=("auto", *FORMATS), help="default: auto (by suffix)"),
            flag("--language", help="ISO 639-1 code of PATHs"),
            flag("--text-field", help="JSON/Parquet field with the text (default: text)"),
            flag("--encoding", help="encoding of the text and HTML files of PATHs, e.g. "
                 "cp1252 (default: detected)"),
            flag("--strict", action="store_true", default=None,
                 help="stop at the first damaged file (truncated, corrupt, unreadable, empty) "
                 "instead of rejecting it and going on (recipe: ingest.strict)"),
            _out("ingest"))),
    StageSpec(
        "curate", "fournil.curate.stage", config=CurateConfig,
        help="license gate, PII scrub, language ID, quality filters, exact and near-duplicate "
        "removal",
        description="Filter ingested documents: license gate, Unicode normalisation, PII "
        "scrubbing, language ID, Gopher/C4/FineWeb quality rules, OCR-noise flag, exact and "
        "MinHash dedup. Rejected documents go to rejected/ with a reason; the manifest's counts "
        "add up; report.md shows counts per source and examples of each rejection reason.",
        flags=(
            _input("ingest"), _out("curate"),
            flag("--executor", choices=["local", "ray"],
                 help="where tasks run: local processes (default) or Ray"),
            flag("--workers", type=int,
                 help="local worker processes (0 = all cores; Ray: CPUs of a local cluster)"),
            flag("--ray-address", help="Ray cluster to join (e.g. auto or host:6379); default: "
                 "start a local one"))),
    StageSpec(
        "correct", "fournil.correct.stage", config=CorrectConfig, optional=True,
        help="correct the OCR-flagged curated documents with a correction model",
        description="Correct the curated documents flagged as OCR-noisy (ocr_flag) with a "
        "model (a fournil or transformers folder, or a .gguf file through llama.cpp), piece by "
        "piece, with copy-biased decoding and a confidence rule (docs/evaluation.md). Every "
        "document is written: unflagged ones as they were, corrected ones with the sha256 of "
        "their original text and the model that corrected them. Chunks are written whole, so "
        "a killed run resumes; the manifest gives pages/hour (a page: 2,000 characters). The "
        "stages after it (synth, tokenizer, tokens) read its documents instead of curate's.",
        flags=(_input("curate"), _out("correct"),
               flag("--model", help="[LABEL=][hf:]PATH: the correction model (default: "
                    "correct.model)"),
               flag("--stop-after", type=int, metavar="CHUNKS",
                    help="write this many chunks and exit; the same command continues"))),
    StageSpec(
        "synth", "fournil.synth.stage", config=SynthConfig, optional=True,
        help="synthetic samples grounded in curated documents: OCR correction, cited RAG, QA, "
        "summaries; verified, with provenance",
        description="Make synthetic training samples from seed passages of the curated "
        "documents, under varied constraints (the recipe's [synth] axes), with the programmatic "
        "generators or an LLM ([synth.generator]). Each sample is verified; failures go to "
        "rejected/ with a reason. report.md shows counts, acceptance per check and diversity "
        "figures (naive vs controlled generation with synth.compare_naive).",
        flags=(_input("curate"), _out("synth"),
               flag("--executor", choices=["local", "ray"],
                    help="where chunks run: this process (default) or Ray tasks"))),
    StageSpec(
        "decontam", "fournil.decontam.stage", config=DecontamConfig, optional=True,
        help="check that no evaluation text is in the training texts (shared word windows)",
        description="Look for every window of decontam.ngram words (13) of the evaluation "
        "files (decontam.against: .txt, .md, .jsonl, .json, or folders of them) in the run's "
        "documents and synthetic training samples, after case folding and punctuation "
        "removal. Overlaps go to overlaps.jsonl; with decontam.on_overlap = \"fail\" (the "
        "default) the run stops there, before any training.",
        flags=(_input("curate"), _input("synth", "synth"), _out("decontam"),
               flag("--against", action="append", metavar="PATH",
                    help="an evaluation file or folder (repeatable; default: decontam.against)"))),
    StageSpec(
        "base", "fournil.base.stage", config=BaseConfig, optional=True, aliases=("import",),
        help="take in an open model to start from (Hugging Face folder or GGUF), with its "
        "lineage",
        description="Import a Hugging Face model folder (Llama/SmolLM2, Mistral, Qwen2, Qwen3) "
        "or a GGUF file (dequantised) as the run's starting model, with its own tokenizer and "
        "chat template. Its license is gated by the recipe's policy (a non-commercial base is "
        "refused unless curate.allowed_licenses admits it); its name, files, license and "
        "declared training data go into the manifest and the model card.",
        flags=(flag("--model", help="model folder, .gguf file or pkg:<package>/<file> "
                    "(default: the recipe's base.model)"), _out("base"))),
    StageSpec(
        "tokenizer", "fournil.tokenizer.stage", config=TokenizerConfig,
        help="train a byte-level BPE tokenizer on curated text",
        flags=(_input("curate"), _out("tokenizer"))),
    StageSpec(
        "tokens", "fournil.tokens.stage", config=TokensConfig,
        help="pack curated documents into train/val token shards",
        flags=(_input("curate"), _input("tokenizer", "tokenizer"), _out("tokens"))),
    StageSpec(
        "index", "fournil.index.stage", config=IndexConfig, optional=True,
        help="cut curated documents into passages with their provenance and index them for "
        "fournil ask",
        description="Cut the run's documents (curated, or corrected when the recipe runs "
        "correct) into passages of whole paragraphs (each an exact slice of its document, "
        "with its id, title, author, date, source, license and URL) and build a French BM25 "
        "index over their titles and texts (elision, stemming, accents folded). The index is "
        "checked on load (format version, analyzer, sha256 of every file); `fournil ask` "
        "answers from it.",
        flags=(_input("curate"), _out("index"))),
    StageSpec(
        "pretrain", "fournil.pretrain.stage", config=PretrainConfig,
        help="train the model on token shards (resumable)",
        description="Pretrain from scratch, or continue from the latest checkpoint in the "
        "output folder. Under torchrun, every process runs it on its share of each step.",
        flags=(_input("tokens", "tokens"), _input("tokenizer", "tokenizer"), _out("pretrain"),
               _STOP_AFTER)),
    StageSpec(
        "eval", "fournil.eval.stage", config=EvalConfig,
        help="held-out bits-per-byte, task scores, comparison reports",
        description="Without --model/--task/--report/--gguf: the eval stage, held-out "
        "bits-per-byte of MODEL per source. With them: every model (a fournil checkpoint or "
        "export, or any Hugging Face causal LM folder) on every task, a table, and with --report "
        "a markdown report with plots; with --gguf, GGUF files scored by llama.cpp next to the "
        "full-precision model. See docs/evaluation.md.",
        flags=(
            flag("model", nargs="?", help="checkpoint or export folder (default: the final "
                 "pretrain checkpoint)"),
            flag("--model", dest="models", action="append", metavar="[LABEL=][hf:]PATH",
                 help="a model to compare (repeatable); hf: runs a fournil folder through "
                 "transformers"),
            flag("--task", action="append", metavar="TASK",
                 help="bpb, mc:FILE.jsonl, ocr[:PATH], rag[:PATH], copy[:PATH] (repeatable; "
                 "default: the recipe's [eval] tasks, else bpb, copy and the run's synth "
                 "ocr/rag eval samples)"),
            flag("--report", metavar="DIR", help="write DIR/report.md, results.json, plots"),
            flag("--max-items", type=int, help="items per task (default: eval.max_items)"),
            _input("tokens", "tokens"), _out("eval"),
            flag("--gguf", action="append", metavar="FILE",
                 help="also score this GGUF file with llama.cpp and print its bpb next to the "
                 "full-precision model's (the file's folder, or MODEL); repeatable"))),
    StageSpec(
        "sft", "fournil.sft.stage", config=SFTConfig, optional=True,
        help="supervised fine-tuning on chats, full or LoRA",
        description="Fine-tune on chats (synth samples, or JSONL/Parquet with a messages "
        "column), the loss on assistant tokens only, several chats packed per row. Chats are "
        "selected first (format, length, citations; the rejected ones in rejected.parquet with "
        "their reason). With sft.lora.rank > 0, LoRA adapters are trained and the checkpoint "
        "holds the merged weights (pip install 'fournil[lora]').",
        flags=(
            flag("--data", action="append", metavar="PATH", help="files or folders of training "
                 "data (repeatable; default sft.data, else <run>/synth)"),
            flag("--base", help="checkpoint or export folder to start from (default: the final "
                 "pretrain checkpoint)"),
            _out("sft"), _STOP_AFTER)),
    StageSpec(
        "dpo", "fournil.dpo.stage", config=DPOConfig, optional=True,
        help="direct preference optimisation on preference pairs",
        description="Preference-tune with the sigmoid DPO loss against the frozen base model. "
        "Pairs are JSONL/Parquet rows with prompt (text or messages), chosen and rejected.",
        flags=(
            flag("--data", action="append", metavar="PATH",
                 help="files or folders of preference pairs (repeatable; default dpo.data)"),
            flag("--base", help="checkpoint or export folder to start from (default: the final "
                 "sft checkpoint, else pretrain's)"),
            _out("dpo"), _STOP_AFTER)),
    StageSpec(
        "report", "fournil.report.stage",
        help="the model before and after post-training, side by side on tasks",
        description="Every model of the run (pretrain, sft, dpo) on the recipe's [eval] tasks "
        "(default: bpb, copy and the synth stage's held-out ocr / rag): report.md with plots "
        "and results.json. Runs when the recipe post-trains or names [eval] tasks.",
        flags=(_out("report"),)),
    StageSpec(
        "export", "fournil.export.stage",
        help="write a Hugging Face model folder with a model card",
        description="Write the HF folder (config, safetensors, tokenizer, chat template, model "
        "card) and, with --gguf, GGUF files for llama.cpp next to it (model-<type>.gguf).",
        flags=(_out("export"),
               flag("--gguf", action="append", metavar="TYPES",
                    help="also write GGUF files: f32, f16, q8_0 and/or q4_0, comma-separated or "
                    "repeated (k-quants: run llama.cpp's llama-quantize on the f16 file)"),
               flag("--results", action="append", metavar="FILE",
                    help="the results.json of a `fournil eval --report` run on this model (and "
                    "baselines), added to the card's evaluation section; repeatable"))),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
CORE_STAGES = tuple(s.name for s in STAGES if not s.optional)
BY_NAME = {s.name: s for s in STAGES}


@dataclass
class StageContext:
    """What a stage's `run` gets: the recipe, the run's folders, and the options of the verb
    that called it (`--input`, `--out`, ...; none under bake)."""

    recipe: Any  # fournil.recipe.Recipe (above this module, so not imported here)
    layout: RunLayout
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def pipeline(self) -> tuple[str, ...]:
        return tuple(s.name for s in STAGES if self.recipe.runs(s.name))

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value

    def folder(self, stage: str, option: str | None = None) -> Path:
        """A stage's folder of this run, or the path the verb's `--<option>` gives."""
        given = self.options.get(option or stage)
        return Path(given) if given else self.layout.path(stage)

    def out(self, stage: str) -> Path:
        return self.folder(stage, "out")

    def documents(self) -> Path:
        """The run's documents, for the stages that read them: the verb's --input, else
        correct/ when the recipe runs the correct stage, else curate/."""
        given = self.options.get("input")
        if given:
            return Path(given)
        return self.layout.path("correct" if self.recipe.runs("correct") else "curate")


@dataclass(frozen=True)
class RunLayout:
    """Where each stage of a run writes: `<root>/<stage>/`, e.g. `layout.curate`."""

    root: Path

    def path(self, stage: str) -> Path:
        if stage not in BY_NAME:
            raise KeyError(f"no stage {stage!r} ({', '.join(STAGE_NAMES)})")
        return self.root / stage

    def __getattr__(self, name: str) -> Path:
        if name in BY_NAME:
            return self.root / name
        raise AttributeError(name)
