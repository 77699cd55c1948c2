"""The model card: what the model is and, with numbers from the manifests, what it was
trained on and under which licenses."""

from __future__ import annotations

_LANGS = {"fr": "French", "en": "English"}


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


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


def render_model_card(name: str, model_config: dict, n_params: int, manifests: dict,
                      languages: list[str], sample: str | None = None) -> str:
    """Markdown with Hugging Face front matter. `manifests` maps stage name -> manifest."""
    ingest, curate = manifests["ingest"]["counts"], manifests["curate"]["counts"]
    tokens = manifests["tokenize"]["counts"]
    pretrain, evaluation = manifests["pretrain"], manifests["eval"]
    train = tokens["train"]
    licenses = sorted(train["by_license"])
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
    parts = [
        front,
        f"# {name}",
        f"A small language model baked by [fournil](https://pypi.org/project/fournil/) from "
        f"openly licensed documents only. Every training token is accounted for below, by "
        f"source and by license ({', '.join(licenses)}).",
        "## Model", arch,
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
        "## Training",
        f"{pt['steps']:,} steps, {pt['tokens_seen']:,} tokens seen "
        f"({pt['tokens_seen'] / max(train['tokens'], 1):.2f} epochs), on {pretrain['device']}; "
        + _training_recipe(pretrain["params"]["pretrain"]),
        "## Evaluation",
        f"Held-out bits per byte: **{evaluation['counts']['val_bpb']:.4f}** "
        f"({evaluation['counts']['tokens']:,} tokens).", per_source_bpb,
        "## Use",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH)\n"
        "model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "ids = tok(\"Il était une fois\", return_tensors=\"pt\").input_ids\n"
        "print(tok.decode(model.generate(ids, max_new_tokens=50, do_sample=True)[0]))\n```",
        "## Limits",
        "A small model trained on a small corpus: it continues text in the style of its "
        "training data; it does not follow instructions and states no reliable facts. "
        "Do not use it for decisions about people.",
    ]
    if sample:
        parts += ["## Sample", f"Prompt and continuation (seeded):\n\n> {sample}"]
    return "\n\n".join(parts) + "\n"
