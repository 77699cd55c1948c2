"""The model card: what the model is and, with numbers from the manifests, what it was
trained on and under which licenses, what curation removed, what share is synthetic, how it
scores, what it is for, and the public summary of its training content (ai_act.py).

Every number comes from the manifests of the stages the run ran, each read through the type
its stage declares (`RunManifests`), never from a recount or another stage's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fournil.decontam.stage import DecontamManifest
from fournil.eval.report import ocr_subset_table
from fournil.export.ai_act import (
    OPEN_LICENSES,
    SYNTHETIC_PREFIX,
    RunManifests,
    counts_text,
    public_summary,
    share,
    synth_generators,
    synthetic_tokens,
    table,
)
from fournil.pretrain.stage import TrainingSummary
from fournil.provenance.lineage import BaseLineage

EvalResults = tuple[str, list[dict]]  # a results.json's name, and its models' results


def _training_recipe(t: TrainingSummary) -> str:
    """One sentence on how the model was trained, from the pretrain stage's summary."""
    optimizer = (f"Muon (lr {t['muon_lr']}) on the hidden matrices and AdamW (lr {t['lr']}) "
                 "on embeddings and norms" if t["optimizer"] == "muon"
                 else f"AdamW (lr {t['lr']}, weight decay {t['weight_decay']})")
    schedule = ("a warmup-stable-decay schedule (decay over the last "
                f"{t['decay_fraction']:.0%} of the steps)" if t["schedule"] == "wsd"
                else "a warmup + cosine schedule")
    extras = []
    if t["mtp_depth"]:
        extras.append(f"with {t['mtp_depth']} multi-token-prediction depth(s) (weight "
                      f"{t['mtp_weight']}, training only: not part of this model)")
    if t["teacher"]:
        extras.append(f"distilled from the teacher `{t['teacher']}` (temperature "
                      f"{t['distill_temperature']}, KL weight {t['distill_alpha']})")
    return f"{optimizer}, {schedule}" + "".join(f", {e}" for e in extras) + "."


# --- provenance, per source -------------------------------------------------------------------


def _post_training_section(manifests: RunManifests) -> str | None:
    """SFT / DPO: the data it used (by task and license, what selection kept), the run, and
    the task scores of the model before and after, from the report stage."""
    parts = []
    if sft := manifests.get("sft"):
        c, data = sft["counts"], sft["data"]
        parts.append(
            f"Supervised fine-tuning: {c['steps']:,} steps, {c['tokens_seen']:,} tokens, "
            f"loss on assistant tokens only, {'LoRA' if sft.get('lora') else 'all weights'}; "
            f"{c['kept']:,} of {c['read']:,} chats kept by data selection "
            f"({share(c['kept'], c['read'])}; rejected: "
            f"{counts_text(sft['selection']['rejected_by_reason']) or 'none'}). Held-out loss "
            f"{c['base_val_loss']:.4f} before, {c['val_loss']:.4f} after.")
        parts.append(table(("task", "training chats"), sorted(data["by_task"].items())))
        parts.append(table(("license", "training chats"),
                            sorted(data["by_license"].items())))
        if "by_source" in data:  # manifests written before it was counted lack it
            parts.append(table(("source of the seed document", "training chats"),
                               sorted(data["by_source"].items())))
    if dpo := manifests.get("dpo"):
        parts.append(f"Preference tuning (DPO): {dpo['counts'].get('steps', 0):,} steps.")
    if (report := manifests.get("report")) and report["results"]:
        parts.append("Task scores before and after post-training (held-out items):\n\n"
                     + _scores_table(report["results"]))
    return "\n\n".join(parts) if parts else None


def _scores_table(results: Sequence[dict], skip_kinds: tuple[str, ...] = ()) -> str:
    """One row per model and task: its float scores. Times are left out: they differ from
    run to run and measure the machine; the card says what the model is."""
    rows = []
    for result in results:
        for task, scores in result["tasks"].items():
            if scores.get("kind") in skip_kinds:
                continue
            shown = {k: v for k, v in scores.items()
                     if isinstance(v, float) and not k.endswith("seconds")}
            rows.append((result["model"], task, ", ".join(
                f"{k} {v:.4f}" for k, v in shown.items())))
    return table(("model", "task", "scores"), rows) if rows else ""


def _further_evaluations(results: Sequence[EvalResults]) -> str:
    """Evaluations run on the exported model (and baselines beside it) after the bake, from
    the results.json of `fournil eval --report` (`fournil export --results`): OCR tasks per
    subset, the others as the report's scores."""
    parts = []
    for name, models in results:
        engines = "; ".join(f"{m['model']} ({m.get('engine', '?')}, "
                            f"`{Path(str(m.get('path', '?'))).name}`)" for m in models)
        parts.append(f"From `{name}`: {engines}.")
        parts.append("\n".join(ocr_subset_table(models, seconds=False)))
        parts.append(_scores_table(models, skip_kinds=("ocr",)))
    return "\n\n".join(p for p in parts if p)


# --- sections ---------------------------------------------------------------------------------

def _seen_section(manifests: RunManifests) -> str | None:
    """The tokens trained on per source (and per phase of a data mixture), from the pretrain
    manifest; None for a manifest that does not record them."""
    seen = manifests["pretrain"]["mixture"]["tokens_seen"]
    if not seen:
        return None
    available = manifests["tokens"]["counts"]["train"]["by_source"]
    phases = list(seen)
    natural = phases == ["natural"]
    sources = sorted({s for counts in seen.values() for s in counts})
    rows = []
    for source in sources:
        total = sum(seen[p].get(source, 0) for p in phases)
        tokens = available.get(source, {}).get("tokens", 0)
        rows.append((source, *([] if natural else [f"{seen[p].get(source, 0):,}"
                                                   for p in phases]),
                     f"{total:,}", f"{total / tokens:.2f}" if tokens else "-"))
    header = ("source", *([] if natural else [f"phase {p}" for p in phases]), "tokens seen",
              "epochs")
    intro = ("Tokens trained on, per source (each training window counted for the source of "
             "its first token):" if natural else
             "Tokens trained on, per source and phase of the data mixture:")
    return intro + "\n\n" + table(header, rows)


def _synthetic_section(manifests: RunManifests) -> str:
    train = manifests["tokens"]["counts"]["train"]
    tokens, synthetic = synthetic_tokens(manifests)
    head = (f"{tokens:,} of {train['tokens']:,} training tokens "
            f"({share(tokens, train['tokens'])}) come from synthetic sources (sources named "
            f"`{SYNTHETIC_PREFIX}<task>`, whose samples record their generator).")
    if not synthetic:
        return head + " Generators: none."
    generators = synth_generators(manifests)
    rows = [(s, c["docs"], f"{c['tokens']:,}", share(c["tokens"], train["tokens"]))
            for s, c in sorted(synthetic.items())]
    gen = (table(("generator", "samples"), [(g, f"{n:,}") for g, n in sorted(
        generators.items())]) if generators else
        "Generators: not recorded in the manifests (no synth stage manifest).")
    return "\n\n".join([head, table(("source", "documents", "tokens", "share"), rows), gen])


def _decontam_section(decontam: DecontamManifest) -> str:
    """What the training texts were checked against, and what was found."""
    c = decontam["counts"]
    files = sorted({Path(p).parent.name + "/" + Path(p).name for p in decontam["against"]})
    shown = ", ".join(f"`{f}`" for f in files[:6]) + (f" and {len(files) - 6} more"
                                                      if len(files) > 6 else "")
    found = c["overlapping_documents"] + c["overlapping_samples"]
    return (f"{c['documents']:,} documents and {c['samples']:,} synthetic training samples "
            f"were checked against {c['against_files']:,} evaluation files ({shown}; "
            f"{c['against_windows']:,} distinct windows) for any shared window of "
            f"{decontam['ngram']} consecutive words (case and punctuation aside): "
            + ("**none shares one**." if not found else
               f"**{c['overlapping_documents']:,} documents and {c['overlapping_samples']:,} "
               "samples share one and were kept** (listed in the decontam stage's "
               "overlaps.jsonl): scores on those evaluation sets overstate the model.")
            + (f" {c['too_short']:,} evaluation text(s) shorter than one window could not "
               "be checked." if c["too_short"] else ""))


def _base_section(lineage: BaseLineage) -> str:
    """The open model this one was made from: an input like a document source."""
    rows = [("name", lineage["name"]), ("license", f"{lineage['license']} (declared: "
                                                    f"{lineage['license_raw'] or '-'})"),
            ("architecture", f"{lineage['architecture']} ({lineage['family']} family), "
                             f"{lineage['parameters']:,} parameters"),
            ("taken from", f"`{lineage['source']}`"
             + (f", {lineage['quantization']} weights dequantised to float32"
                if lineage["quantization"] else "")),
            *((f"file `{f['name']}`", f"{f['bytes']:,} bytes, sha256 `{f['sha256']}`")
              for f in lineage["files"])]
    data = ("\n".join(f"- {d}" for d in lineage["training_data"]) if lineage["training_data"]
            else "- not declared")
    return "\n\n".join([
        table(("", ""), rows),
        f"Its training data, as its authors declare it ({lineage['training_data_declared_in']}; "
        "fournil cannot verify it):", data])


def _intended_use(model_config: dict, n_params: int, manifests: RunManifests) -> str:
    train_tokens = manifests["tokens"]["counts"]["train"]["tokens"]
    post_trained = any(k in manifests for k in ("sft", "posttrain", "dpo"))
    base = manifests["base"]["lineage"] if "base" in manifests else None
    origin = (f"fine-tuned from `{base['name']}`, with {train_tokens:,} tokens of its own "
              "corpus" if base else f"trained on {train_tokens:,} tokens")
    return "\n\n".join([
        "**Intended use**: research and teaching on small language models and on training-data "
        "provenance; a base model to fine-tune or distil for narrow text tasks in the "
        "languages of its corpus; reproducing and auditing a training run from its recipe and "
        "manifests.",
        "**Out of scope**: stating facts or giving advice (medical, legal, financial), "
        "decisions about people, safety-critical uses, and passing its text off as written by "
        "a person.",
        f"**Limits**: {n_params:,} parameters {origin}: it continues "
        "text in the style of its training data (the sources below, with their period and "
        "register) and states no reliable facts. "
        + ("It was not instruction- or safety-tuned (no post-training stage ran): in a chat "
           "its replies are continuations, not answers. " if not post_trained else "")
        + f"Its context is {model_config['max_seq_len']:,} tokens. It can reproduce the "
        "biases and the dated language of its sources.",
    ])


def render_model_card(name: str, model_config: dict, n_params: int, manifests: RunManifests,
                      languages: list[str], sample: str | None = None,
                      results: Sequence[EvalResults] = ()) -> str:
    """Markdown with Hugging Face front matter, from the manifests of the stages the run ran
    (each read through its stage's type), and the `results` of evaluations run after."""
    ingest, curate = manifests["ingest"]["counts"], manifests["curate"]["counts"]
    tokens = manifests["tokens"]["counts"]
    pretrain, evaluation = manifests["pretrain"], manifests["eval"]
    train = tokens["train"]
    licenses = sorted(train["by_license"])
    open_only = all(lic in OPEN_LICENSES for lic in licenses)
    base = manifests["base"]["lineage"] if "base" in manifests else None
    front = "\n".join([
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "language:", *[f"- {lang}" for lang in languages],
        "license: other",
        *([f"base_model: {base['name']}"] if base else []),
        "tags:", "- fournil", f"- {model_config.get('family', 'qwen3')}", "- small-language-model",
        "---",
    ])
    mc = model_config
    arch = table(("", ""), [
        ("architecture", f"{base['architecture']} (decoder-only; the base model's)" if base
         else "Qwen3ForCausalLM (decoder-only, RMSNorm, RoPE, SwiGLU, GQA, QK-norm)"),
        ("parameters", f"{n_params:,}"),
        ("layers / hidden / heads (kv)",
         f"{mc['num_layers']} / {mc['hidden_size']} / {mc['num_heads']} ({mc['num_kv_heads']})"),
        ("vocabulary", f"{mc['vocab_size']:,} (" + ("the base model's tokenizer" if base else
                                                    "byte-level BPE trained on the corpus") + ")"),
        ("context length", f"{mc['max_seq_len']:,} tokens"),
        ("tied embeddings", mc["tie_embeddings"]),
    ])
    by_source = table(("source", "documents", "tokens", "share"), [
        (s, c["docs"], f"{c['tokens']:,}", share(c["tokens"], train["tokens"]))
        for s, c in sorted(train["by_source"].items())])
    by_license = table(("license", "documents", "tokens", "share"), [
        (lic, c["docs"], f"{c['tokens']:,}", share(c["tokens"], train["tokens"]))
        for lic, c in sorted(train["by_license"].items())])
    rejected = table(("reason", "documents"),
                      sorted(curate["rejected"].items()) or [("(none)", 0)])
    per_source_bpb = table(("source", "bits per byte"), [
        (s, f"{r['bpb']:.4f}") for s, r in sorted(evaluation["bpb"]["by_source"].items())])
    pt = pretrain["counts"]
    post = _post_training_section(manifests)
    parts = [
        front,
        f"# {name}",
        "A small language model baked by [fournil](https://pypi.org/project/fournil/) from "
        + ("openly licensed documents only" if open_only else
           "documents under the licenses its recipe admitted")
        + f". Every training token is accounted for below, by source and by license "
        f"({', '.join(licenses)}).",
        "## Model", arch,
        *(["## Base model", _base_section(base)] if base else []),
        "## Intended use and limits", _intended_use(model_config, n_params, manifests),
        "## Training data",
        f"{ingest['read']:,} documents read, {curate['kept']:,} kept after curation "
        f"(license gate, language ID, quality filters, exact and near-duplicate removal"
        + (f", {sum(curate['pii'].values()):,} e-mails, phone numbers, IBANs or IP "
           "addresses replaced by placeholders" if curate["pii"] else "")
        + "); "
        f"{train['tokens']:,} training tokens and {tokens['val']['tokens']:,} held-out "
        f"tokens ({tokens['val']['docs']} documents).",
        "### Training tokens by source", by_source,
        "### Training tokens by license", by_license,
        "### Rejected during curation", rejected,
        "### Synthetic data", _synthetic_section(manifests),
        *(["### Decontamination", _decontam_section(manifests["decontam"])]
          if "decontam" in manifests else []),
        "## Training",
        ("No pretraining: the base model as it is, before any post-training below."
         if pt["steps"] == 0 else
         ("Continued pretraining of the base model: " if base else "")
         + f"{pt['steps']:,} steps, {pt['tokens_seen']:,} tokens seen "
         f"({pt['tokens_seen'] / max(train['tokens'], 1):.2f} epochs), on {pretrain['device']}; "
         + _training_recipe(pretrain["training"])),
        *[x for x in [_seen_section(manifests)] if x],
        *(["## Post-training", post] if post else []),
        "## Evaluation",
        f"Held-out bits per byte: **{evaluation['counts']['val_bpb']:.4f}** "
        f"({evaluation['counts']['tokens']:,} tokens).", per_source_bpb,
        *(["### Further evaluations", _further_evaluations(results)] if results else []),
        "## Use",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH)\n"
        "model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "ids = tok(\"Il était une fois\", return_tensors=\"pt\").input_ids\n"
        "print(tok.decode(model.generate(ids, max_new_tokens=50, do_sample=True)[0]))\n```",
        "or `fournil chat PATH` in a terminal, or `fournil serve PATH` for an "
        "OpenAI-compatible API on 127.0.0.1:8000.",
        "## Public summary of training content",
        public_summary(name, manifests, languages),
    ]
    if sample:
        parts += ["## Sample", f"Prompt and continuation (seeded):\n\n> {sample}"]
    return "\n\n".join(parts) + "\n"
