"""The model card's public summary of training content, in the structure of the European
Commission's template for general-purpose AI models (AI Act art. 53(1)(d), template of July
2025: 1. general information, 2. list of data sources, 3. data processing), and what the
card's other sections share with it: the run's manifests, read through each stage's type, and
the provenance of each source.

Every number comes from the stage manifests, never from a recount, so the card states exactly
what the run recorded. What fournil cannot know (the provider, the date the model is placed on
the market) is left as a marked blank for the provider to fill in.
"""

from __future__ import annotations

from collections import Counter
from typing import TypedDict

from fournil.base.stage import BaseManifest
from fournil.curate.stage import CurateManifest
from fournil.decontam.stage import DecontamManifest
from fournil.dpo.stage import DPOManifest
from fournil.eval.stage import EvalManifest
from fournil.ingest.stage import IngestManifest
from fournil.pretrain.stage import PretrainManifest
from fournil.provenance.licenses import DEFAULT_ALLOWED
from fournil.provenance.lineage import BaseLineage
from fournil.report.stage import ReportManifest
from fournil.sft.stage import SFTManifest
from fournil.synth.stage import SynthManifest
from fournil.tokens.stage import TokensManifest


class _CoreManifests(TypedDict):
    ingest: IngestManifest
    curate: CurateManifest
    tokens: TokensManifest
    pretrain: PretrainManifest
    eval: EvalManifest


class RunManifests(_CoreManifests, total=False):
    """The manifests of the stages a run ran, by stage name: the core ones always."""

    base: BaseManifest
    synth: SynthManifest
    decontam: DecontamManifest
    sft: SFTManifest
    dpo: DPOManifest
    report: ReportManifest


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


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def counts_text(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items())) or "none"


def source_licenses(manifests: RunManifests) -> dict[str, dict[str, int]]:
    """Per source, its kept documents per license: the curate manifest's per-source tally,
    else the license the ingest stage declared for the whole source."""
    licenses: dict[str, dict[str, int]] = {}
    for s in manifests["ingest"]["sources"]:
        if s["license"]:
            licenses[s["name"]] = {s["license"]: manifests["ingest"]["counts"]["by_source"]
                                   .get(s["name"], {}).get("kept", 0)}
    for name, c in manifests["curate"]["counts"]["by_source"].items():
        if c["licenses"]:
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


def synthetic_tokens(manifests: RunManifests) -> tuple[int, dict[str, dict]]:
    """Training tokens from synthetic sources, and those sources' tokenize counts."""
    by_source = manifests["tokens"]["counts"]["train"]["by_source"]
    synthetic = {s: c for s, c in by_source.items() if s.startswith(SYNTHETIC_PREFIX)}
    return sum(c["tokens"] for c in synthetic.values()), synthetic


def synth_generators(manifests: RunManifests) -> dict[str, int]:
    """{generator: kept samples} over the synth stage's tasks."""
    total: Counter = Counter()
    if synth := manifests.get("synth"):
        for task in synth["counts"]["tasks"].values():
            total.update(task["generators"])
    return dict(total)


def _rejections(manifests: RunManifests) -> list[tuple[str, str, int]]:
    """(stage, reason, documents) for every rejection of the ingest and curate stages."""
    rows = [("ingest", r, n) for r, n in sorted(manifests["ingest"]["counts"]["rejected"].items())]
    rows += [("curate", r, n) for r, n in sorted(manifests["curate"]["counts"]["rejected"].items())]
    return rows


def _reason_group(reason: str) -> str:
    family = reason.split(":", 1)[0]
    return {"license": "license gate", "dup": "deduplication", "quality": "quality filters",
            "lang": "language filter", "ingest": "unreadable or invalid input"}.get(
        family, "other")


def _dependencies(base: BaseLineage | None, teacher: str | None) -> str:
    """The models this one was made from: an open base it was fine-tuned from, a teacher."""
    parts = []
    if base:
        data = ("; ".join(base["training_data"]) if base["training_data"]
                else "not declared")
        parts.append(f"fine-tuned from the open model `{base['name']}` ({base['license']}); "
                     f"its training data, as its authors declare it: {data} (see \"Base "
                     "model\")")
    if teacher:
        parts.append(f"knowledge distillation from `{teacher}`")
    return "; ".join(parts) or "none: trained from scratch (random initialisation)"


def public_summary(name: str, manifests: RunManifests, languages: list[str]) -> str:
    ingest, curate = manifests["ingest"], manifests["curate"]
    train = manifests["tokens"]["counts"]["train"]
    val = manifests["tokens"]["counts"]["val"]
    pretrain = manifests["pretrain"]
    total = train["tokens"]
    teacher = pretrain["training"]["teacher"]
    base = manifests["base"]["lineage"] if "base" in manifests else None
    size_range = ("less than 1 billion tokens" if total < 10**9 else
                  "1 billion to 10 trillion tokens" if total <= 10 * 10**12 else
                  "more than 10 trillion tokens")
    langs_kept = curate["counts"]["languages"]
    lang_text = (", ".join(f"{_LANGS.get(lang, lang)} (`{lang}`): {n:,} documents"
                           for lang, n in sorted(langs_kept.items(), key=lambda x: -x[1]))
                 if langs_kept else ", ".join(_LANGS.get(lang, lang) for lang in languages))
    formats = Counter()
    for s in ingest["sources"]:
        formats[s["format"]] += s["files"]
    collected = ingest["timings"]["started"][:10]

    general = "\n".join([
        "#### 1.1 Provider identification",
        f"- Provider name and contact details: {TO_FILL}",
        f"- Authorised representative (if any): {TO_FILL}",
        "",
        "#### 1.2 Model identification",
        f"- Versioned model name: `{name}`",
        f"- Model dependencies: {_dependencies(base, teacher)}",
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
                       f"({share(tokens, total)}).")
        if key == "2.5":
            generators = synth_generators(manifests)
            sources.append("Generators: " + (", ".join(f"`{g}` ({n:,} samples)" for g, n in
                                                       sorted(generators.items()))
                                             if generators else "not recorded in the manifests")
                           + ".")
        sources.append(table(header, [
            (src, ", ".join(sorted(licenses.get(src, {}))) or "not recorded", c["docs"],
             f"{c['tokens']:,}", share(c["tokens"], total)) for src, c in members]))

    allowed = curate["allowed_licenses"]
    rejections = _rejections(manifests)
    license_rejects = {r: n for stage, r, n in rejections if r.startswith("license:")}
    pii = curate["counts"]["pii"]
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
        f"the gate ({counts_text(license_rejects)}). No online source was crawled, so there "
        "were no robots.txt or other machine-readable opt-outs to collect; the sources were "
        f"chosen by the provider with their licenses. Code of Practice signatory: {TO_FILL}",
        "#### 3.2 Removal of illegal content",
        f"Personal data: the curate stage replaced {sum(pii.values()):,} e-mail addresses, "
        "phone numbers, IBANs and IP addresses by placeholders (" + counts_text(pii) + "). fournil "
        "runs no other classifier for illegal content; further measures taken by the "
        f"provider: {TO_FILL}",
        "#### 3.3 Other information: curation",
        f"{ingest['counts']['read']:,} documents read, {curate['counts']['kept']:,} kept. "
        "Documents removed, by stage and filter (each document once, with the first reason "
        "that applied):",
        table(("stage", "filter", "documents"),
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
