"""The model card: what the model is and, with numbers from the manifests, what it was
trained on and under which licenses, what curation removed, what share is synthetic, how it
scores, what it is for, and a public summary of its training content in the structure of the
European Commission's template for general-purpose AI models (AI Act art. 53(1)(d), template
of July 2025: 1. general information, 2. list of data sources, 3. data processing).

Every number comes from the stage manifests (ingest, curate, tokenize, pretrain, eval, and
a synth stage's when there is one), never from a recount, so the card states exactly what
the run recorded. What fournil cannot know (the provider, the date the model is placed on
the market) is left as a marked blank for the provider to fill in.
"""

from __future__ import annotations

from collections import Counter

from fournil.provenance.licenses import DEFAULT_ALLOWED

_LANGS = {"fr": "French", "en": "English", "de": "German", "es": "Spanish", "it": "Italian",
          "pt": "Portuguese", "nl": "Dutch"}
# DESIGN.md: a synthetic sample's `source` is `synth/<task>` (its generator is recorded per
# sample and tallied in the synth stage's manifest as counts.generators {generator: samples}).
SYNTHETIC_PREFIX = "synth/"
OPEN_LICENSES = frozenset(DEFAULT_ALLOWED)  # public domain, CC0, CC-BY(-SA), Etalab, permissive
TO_FILL = "*(to be completed by the provider)*"

# The template's data source categories (section 2).
CATEGORIES = {
    "2.1": "Publicly available datasets",
    "2.2": "Private non-publicly available datasets obtained from third parties",
    "2.3": "Data crawled and scraped from online sources",
    "2.4": "User data",
    "2.5": "Synthetic data",
    "2.6": "Other sources of data",
}


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items())) or "none"


def _training_recipe(p: dict) -> str:
    """One sentence on how the model was trained, from the pretrain stage's parameters."""
    opt = p["optimizer"]
    optimizer = (f"Muon (lr {opt['muon_lr']}) on the hidden matrices and AdamW (lr {opt['lr']}) "
                 "on embeddings and norms" if opt["name"] == "muon"
                 else f"AdamW (lr {opt['lr']}, weight decay {opt['weight_decay']})")
    schedule = ("a warmup-stable-decay schedule (decay over the last "
                f"{p['decay_fraction']:.0%} of the steps)" if p["schedule"] == "wsd"
                else "a warmup + cosine schedule")
    extras = []
    if p["mtp"]["depth"]:
        extras.append(f"with {p['mtp']['depth']} multi-token-prediction depth(s) (weight "
                      f"{p['mtp']['weight']}, training only: not part of this model)")
    if p["distill"]["teacher"]:
        extras.append(f"distilled from the teacher `{p['distill']['teacher']}` (temperature "
                      f"{p['distill']['temperature']}, KL weight {p['distill']['alpha']})")
    return f"{optimizer}, {schedule}" + "".join(f", {e}" for e in extras) + "."


# --- provenance, per source -------------------------------------------------------------------

def source_licenses(manifests: dict) -> dict[str, dict[str, int]]:
    """Per source, its kept documents per license: the curate manifest's per-source tally,
    else the license the ingest stage declared for the whole source."""
    licenses: dict[str, dict[str, int]] = {}
    for s in manifests["ingest"].get("sources", []):
        if s.get("license"):
            licenses[s["name"]] = {s["license"]: manifests["ingest"]["counts"]["by_source"]
                                   .get(s["name"], {}).get("kept", 0)}
    for name, c in manifests["curate"]["counts"].get("by_source", {}).items():
        if c.get("licenses"):
            licenses[name] = c["licenses"]
    return licenses


def source_category(name: str, licenses: dict[str, int]) -> str:
    """The template category of a source, from its provenance: synthetic by its name
    (`synth/<task>`), publicly available when every license of it is an open one, else
    obtained from a third party under a license the recipe's policy admitted. fournil has no
    crawler and no channel for user data, so 2.3 and 2.4 hold nothing it ingested."""
    if name.startswith(SYNTHETIC_PREFIX):
        return "2.5"
    if licenses and all(lic in OPEN_LICENSES for lic in licenses):
        return "2.1"
    return "2.2"


def synthetic_tokens(manifests: dict) -> tuple[int, dict[str, dict]]:
    """Training tokens from synthetic sources, and those sources' tokenize counts."""
    by_source = manifests["tokenize"]["counts"]["train"]["by_source"]
    synthetic = {s: c for s, c in by_source.items() if s.startswith(SYNTHETIC_PREFIX)}
    return sum(c["tokens"] for c in synthetic.values()), synthetic


def _generators(manifests: dict) -> dict[str, int]:
    """{generator: kept samples} over the synth stage's tasks."""
    total: Counter = Counter()
    for task in manifests.get("synth", {}).get("counts", {}).get("tasks", {}).values():
        total.update(task.get("generators", {}))
    return dict(total)


def _post_training_section(manifests: dict) -> str | None:
    """SFT / DPO: the data it used (by task and license, what selection kept), the run, and
    the task scores of the model before and after, from the report stage."""
    parts = []
    if sft := manifests.get("sft"):
        c, data = sft["counts"], sft.get("data", {})
        parts.append(
            f"Supervised fine-tuning: {c['steps']:,} steps, {c['tokens_seen']:,} tokens, "
            f"loss on assistant tokens only, {'LoRA' if sft.get('lora') else 'all weights'}; "
            f"{c['kept']:,} of {c['read']:,} chats kept by data selection "
            f"({_share(c['kept'], c['read'])}; rejected: "
            f"{_counts(sft['selection']['rejected_by_reason']) or 'none'}). Held-out loss "
            f"{c['base_val_loss']:.4f} before, {c['val_loss']:.4f} after.")
        parts.append(_table(("task", "training chats"), sorted(data.get("by_task", {}).items())))
        parts.append(_table(("license", "training chats"),
                            sorted(data.get("by_license", {}).items())))
    if dpo := manifests.get("dpo"):
        parts.append(f"Preference tuning (DPO): {dpo['counts'].get('steps', 0):,} steps.")
    if report := manifests.get("report"):
        rows = []
        for result in report.get("results", []):
            for task, scores in result["tasks"].items():
                shown = {k: v for k, v in scores.items() if isinstance(v, float) and k not in (
                    "seconds",)}
                rows.append((result["model"], task, ", ".join(
                    f"{k} {v:.4f}" for k, v in shown.items())))
        parts.append("Task scores before and after post-training (held-out items):\n\n"
                     + _table(("model", "task", "scores"), rows))
    return "\n\n".join(parts) if parts else None


# --- sections ---------------------------------------------------------------------------------

def _seen_section(manifests: dict) -> str | None:
    """The tokens trained on per source (and per phase of a data mixture), from the pretrain
    manifest; None for a manifest that does not record them."""
    seen = manifests["pretrain"].get("mixture", {}).get("tokens_seen") or {}
    if not seen:
        return None
    available = manifests["tokenize"]["counts"]["train"]["by_source"]
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
    return intro + "\n\n" + _table(header, rows)


def _synthetic_section(manifests: dict) -> str:
    train = manifests["tokenize"]["counts"]["train"]
    tokens, synthetic = synthetic_tokens(manifests)
    head = (f"{tokens:,} of {train['tokens']:,} training tokens "
            f"({_share(tokens, train['tokens'])}) come from synthetic sources (sources named "
            f"`{SYNTHETIC_PREFIX}<task>`, whose samples record their generator).")
    if not synthetic:
        return head + " Generators: none."
    generators = _generators(manifests)
    rows = [(s, c["docs"], f"{c['tokens']:,}", _share(c["tokens"], train["tokens"]))
            for s, c in sorted(synthetic.items())]
    gen = (_table(("generator", "samples"), [(g, f"{n:,}") for g, n in sorted(
        generators.items())]) if generators else
        "Generators: not recorded in the manifests (no synth stage manifest).")
    return "\n\n".join([head, _table(("source", "documents", "tokens", "share"), rows), gen])


def _rejections(manifests: dict) -> list[tuple[str, str, int]]:
    """(stage, reason, documents) for every rejection of the ingest and curate stages."""
    rows = [("ingest", r, n) for r, n in sorted(manifests["ingest"]["counts"]["rejected"].items())]
    rows += [("curate", r, n) for r, n in sorted(manifests["curate"]["counts"]["rejected"].items())]
    return rows


def _reason_group(reason: str) -> str:
    family = reason.split(":", 1)[0]
    return {"license": "license gate", "dup": "deduplication", "quality": "quality filters",
            "lang": "language filter", "ingest": "unreadable or invalid input"}.get(
        family, "other")


def _public_summary(name: str, manifests: dict, languages: list[str]) -> str:
    ingest, curate = manifests["ingest"], manifests["curate"]
    train = manifests["tokenize"]["counts"]["train"]
    val = manifests["tokenize"]["counts"]["val"]
    pretrain = manifests["pretrain"]
    total = train["tokens"]
    teacher = pretrain.get("params", {}).get("pretrain", {}).get("distill", {}).get("teacher")
    size_range = ("less than 1 billion tokens" if total < 10**9 else
                  "1 billion to 10 trillion tokens" if total <= 10 * 10**12 else
                  "more than 10 trillion tokens")
    langs_kept = curate["counts"].get("languages") or {}
    lang_text = (", ".join(f"{_LANGS.get(lang, lang)} (`{lang}`): {n:,} documents"
                           for lang, n in sorted(langs_kept.items(), key=lambda x: -x[1]))
                 if langs_kept else ", ".join(_LANGS.get(lang, lang) for lang in languages))
    formats = Counter()
    for s in ingest.get("sources", []):
        formats[s.get("format") or "?"] += s.get("files", 0)
    collected = ingest.get("timings", {}).get("started", "")[:10] or "not recorded"

    general = "\n".join([
        "#### 1.1 Provider identification",
        f"- Provider name and contact details: {TO_FILL}",
        f"- Authorised representative (if any): {TO_FILL}",
        "",
        "#### 1.2 Model identification",
        f"- Versioned model name: `{name}`",
        "- Model dependencies: " + (f"knowledge distillation from `{teacher}`" if teacher else
                                    "none: trained from scratch (random initialisation)"),
        f"- Date of placement on the Union market: {TO_FILL}",
        "",
        "#### 1.3 Modalities, overall training data size and other characteristics",
        "- Modalities: text (no image, audio or video)",
        f"- Training data size (text): {total:,} tokens ({size_range}), in {train['docs']:,} "
        f"documents; {val['tokens']:,} further tokens ({val['docs']:,} documents) were held out "
        "for evaluation and not trained on",
        "- Types of content: documents read from "
        + (", ".join(f"{n:,} {'' if f in ('auto', '?') else f + ' '}file{'s' * (n != 1)}"
                     for f, n in sorted(formats.items())) or "no files"),
        f"- Latest date of data acquisition: {collected} (the ingest stage read every source "
        "once; the data are not collected continuously)",
        f"- Languages (documents kept after curation, by detected language): {lang_text}",
    ])

    licenses = source_licenses(manifests)
    by_category: dict[str, list[tuple[str, dict]]] = {k: [] for k in CATEGORIES}
    for source, c in sorted(train["by_source"].items()):
        by_category[source_category(source, licenses.get(source, {}))].append((source, c))
    header = ("source", "licenses", "documents", "tokens", "share of training tokens")
    empty = {
        "2.1": "None.",
        "2.2": "None: no source is under a license outside the open ones (public domain, CC0, "
               "CC-BY, CC-BY-SA, Licence Ouverte, permissive code licenses).",
        "2.3": "None: fournil has no crawler; the provider did not crawl or scrape online "
               "sources for this model. Every source is a set of files with a declared license.",
        "2.4": "None: no data from users of this model or of other services of the provider "
               "was ingested.",
        "2.5": "None: no synthetic source (`synth/<task>`) is in the training data.",
        "2.6": "None.",
    }
    sources = [
        f"Each source is categorised from its provenance: a source named `{SYNTHETIC_PREFIX}"
        "<task>` is synthetic (2.5); one whose documents are all under open licenses (public "
        "domain, CC0, CC-BY, CC-BY-SA, Licence Ouverte, permissive code licenses) is a publicly "
        "available dataset (2.1); any other is a dataset licensed from a third party (2.2). "
        "Tokens are training tokens, held-out ones excluded."]
    for key, title in CATEGORIES.items():
        members = by_category[key]
        tokens = sum(c["tokens"] for _, c in members)
        sources.append(f"#### {key} {title}")
        if not members:
            sources.append(empty[key])
            continue
        sources.append(f"Yes: {len(members)} source(s), text, {tokens:,} training tokens "
                       f"({_share(tokens, total)}).")
        if key == "2.5":
            generators = _generators(manifests)
            sources.append("Generators: " + (", ".join(f"`{g}` ({n:,} samples)" for g, n in
                                                       sorted(generators.items()))
                                             if generators else "not recorded in the manifests")
                           + ".")
        sources.append(_table(header, [
            (src, ", ".join(sorted(licenses.get(src, {}))) or "not recorded", c["docs"],
             f"{c['tokens']:,}", _share(c["tokens"], total)) for src, c in members]))

    allowed = curate.get("params", {}).get("allowed_licenses") or []
    rejections = _rejections(manifests)
    license_rejects = {r: n for stage, r, n in rejections if r.startswith("license:")}
    pii = curate["counts"].get("pii") or {}
    groups: Counter[tuple[str, str]] = Counter()
    for stage, reason, n in rejections:
        groups[(stage, _reason_group(reason))] += n
    processing = "\n\n".join([
        "#### 3.1 Respect of reservation of rights from the text and data mining exception",
        "Every document carries the license its source or its own record declares, normalised "
        "to an SPDX identifier; the curate stage's license gate admits only the licenses of the "
        "recipe's policy (" + (", ".join(f"`{lic}`" for lic in allowed) or "not recorded")
        + ") and rejects every other document (non-commercial, no-derivatives, unknown or "
        f"proprietary licenses): {sum(license_rejects.values()):,} documents were rejected by "
        f"the gate ({_counts(license_rejects)}). No online source was crawled, so there were no "
        "robots.txt or other machine-readable opt-outs to collect; the sources were chosen by "
        f"the provider with their licenses. Code of Practice signatory: {TO_FILL}",
        "#### 3.2 Removal of illegal content",
        f"Personal data: the curate stage replaced {sum(pii.values()):,} e-mail addresses, "
        "phone numbers, IBANs and IP addresses by placeholders (" + _counts(pii) + "). fournil "
        "runs no other classifier for illegal content; further measures taken by the "
        f"provider: {TO_FILL}",
        "#### 3.3 Other information: curation",
        f"{ingest['counts']['read']:,} documents read, {curate['counts']['kept']:,} kept. "
        "Documents removed, by stage and filter (each document once, with the first reason "
        "that applied):",
        _table(("stage", "filter", "documents"),
               [(s, g, f"{n:,}") for (s, g), n in sorted(groups.items())]
               or [("-", "(none)", 0)]),
    ])
    return "\n\n".join([
        "This section follows the European Commission's template for the public summary of "
        "training content of general-purpose AI models (July 2025). It is generated from the "
        "run's manifests; the marked blanks are for the provider.",
        "### 1. General information", general,
        "### 2. List of data sources", "\n\n".join(sources),
        "### 3. Data processing aspects", processing,
    ])


def _intended_use(model_config: dict, n_params: int, manifests: dict) -> str:
    train_tokens = manifests["tokenize"]["counts"]["train"]["tokens"]
    post_trained = any(k in manifests for k in ("sft", "posttrain", "dpo"))
    return "\n\n".join([
        "**Intended use**: research and teaching on small language models and on training-data "
        "provenance; a base model to fine-tune or distil for narrow text tasks in the "
        "languages of its corpus; reproducing and auditing a training run from its recipe and "
        "manifests.",
        "**Out of scope**: stating facts or giving advice (medical, legal, financial), "
        "decisions about people, safety-critical uses, and passing its text off as written by "
        "a person.",
        f"**Limits**: {n_params:,} parameters trained on {train_tokens:,} tokens: it continues "
        "text in the style of its training data (the sources below, with their period and "
        "register) and states no reliable facts. "
        + ("It was not instruction- or safety-tuned (no post-training stage ran): in a chat "
           "its replies are continuations, not answers. " if not post_trained else "")
        + f"Its context is {model_config['max_seq_len']:,} tokens. It can reproduce the "
        "biases and the dated language of its sources.",
    ])


def render_model_card(name: str, model_config: dict, n_params: int, manifests: dict,
                      languages: list[str], sample: str | None = None) -> str:
    """Markdown with Hugging Face front matter. `manifests` maps stage name -> manifest:
    ingest, curate, tokenize, pretrain and eval; synth (optional) for synthetic data."""
    ingest, curate = manifests["ingest"]["counts"], manifests["curate"]["counts"]
    tokens = manifests["tokenize"]["counts"]
    pretrain, evaluation = manifests["pretrain"], manifests["eval"]
    train = tokens["train"]
    licenses = sorted(train["by_license"])
    open_only = all(lic in OPEN_LICENSES for lic in licenses)
    front = "\n".join([
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "language:", *[f"- {lang}" for lang in languages],
        "license: other",
        "tags:", "- fournil", "- qwen3", "- small-language-model",
        "---",
    ])
    mc = model_config
    arch = _table(("", ""), [
        ("architecture", "Qwen3ForCausalLM (decoder-only, RMSNorm, RoPE, SwiGLU, GQA, QK-norm)"),
        ("parameters", f"{n_params:,}"),
        ("layers / hidden / heads (kv)",
         f"{mc['num_layers']} / {mc['hidden_size']} / {mc['num_heads']} ({mc['num_kv_heads']})"),
        ("vocabulary", f"{mc['vocab_size']:,} (byte-level BPE trained on the corpus)"),
        ("context length", f"{mc['max_seq_len']:,} tokens"),
        ("tied embeddings", mc["tie_embeddings"]),
    ])
    by_source = _table(("source", "documents", "tokens", "share"), [
        (s, c["docs"], f"{c['tokens']:,}", _share(c["tokens"], train["tokens"]))
        for s, c in sorted(train["by_source"].items())])
    by_license = _table(("license", "documents", "tokens", "share"), [
        (lic, c["docs"], f"{c['tokens']:,}", _share(c["tokens"], train["tokens"]))
        for lic, c in sorted(train["by_license"].items())])
    rejected = _table(("reason", "documents"),
                      sorted(curate["rejected"].items()) or [("(none)", 0)])
    per_source_bpb = _table(("source", "bits per byte"), [
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
        "## Intended use and limits", _intended_use(model_config, n_params, manifests),
        "## Training data",
        f"{ingest['read']:,} documents read, {curate['kept']:,} kept after curation "
        f"(license gate, language ID, quality filters, exact and near-duplicate removal"
        + (f", {sum(curate['pii'].values()):,} e-mails, phone numbers, IBANs or IP "
           "addresses replaced by placeholders" if curate.get("pii") else "")
        + "); "
        f"{train['tokens']:,} training tokens and {tokens['val']['tokens']:,} held-out "
        f"tokens ({tokens['val']['docs']} documents).",
        "### Training tokens by source", by_source,
        "### Training tokens by license", by_license,
        "### Rejected during curation", rejected,
        "### Synthetic data", _synthetic_section(manifests),
        "## Training",
        f"{pt['steps']:,} steps, {pt['tokens_seen']:,} tokens seen "
        f"({pt['tokens_seen'] / max(train['tokens'], 1):.2f} epochs), on {pretrain['device']}; "
        + _training_recipe(pretrain["params"]["pretrain"]),
        *[x for x in [_seen_section(manifests)] if x],
        *(["## Post-training", post] if post else []),
        "## Evaluation",
        f"Held-out bits per byte: **{evaluation['counts']['val_bpb']:.4f}** "
        f"({evaluation['counts']['tokens']:,} tokens).", per_source_bpb,
        "## Use",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH)\n"
        "model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "ids = tok(\"Il était une fois\", return_tensors=\"pt\").input_ids\n"
        "print(tok.decode(model.generate(ids, max_new_tokens=50, do_sample=True)[0]))\n```",
        "or `fournil chat PATH` in a terminal, or `fournil serve PATH` for an "
        "OpenAI-compatible API on 127.0.0.1:8000.",
        "## Public summary of training content",
        _public_summary(name, manifests, languages),
    ]
    if sample:
        parts += ["## Sample", f"Prompt and continuation (seeded):\n\n> {sample}"]
    return "\n\n".join(parts) + "\n"
