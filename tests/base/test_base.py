"""The base stage: an open model taken in with its lineage, its license gated by the recipe's
policy; and the must-show of issue 16 end to end: SmolLM2-135M-Instruct from the wheel, LoRA
SFT, exported back as a `LlamaForCausalLM` folder transformers computes like fournil, and as a
GGUF llama.cpp decodes like fournil."""

from __future__ import annotations

import hashlib
import json
from itertools import islice
from pathlib import Path

import pytest
import torch

from fournil.bake import bake
from fournil.base.config import BaseConfig
from fournil.base.stage import run_base
from fournil.core.stage import read_manifest
from fournil.core.validation import RecipeError
from fournil.curate.config import CurateConfig
from fournil.export.gguf import export_gguf
from fournil.model.generate import generate
from fournil.model.transformer import Transformer
from fournil.provenance.lineage import LINEAGE
from fournil.recipe import load_recipe
from fournil.tokenizer.train import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
POLICY = CurateConfig().allowed_licenses


@pytest.fixture(scope="module")
def llama_folder(tiny_hf_model):
    from transformers import LlamaConfig

    return tiny_hf_model("llama", LlamaConfig)


def test_a_folder_is_taken_in_with_its_lineage(llama_folder, tmp_path):
    manifest = run_base(llama_folder, tmp_path / "base", BaseConfig(license="apache-2.0"),
                        POLICY, given="tiny-llama")
    lineage = manifest["lineage"]
    assert (lineage["license"], lineage["license_raw"]) == ("Apache-2.0", "apache-2.0")
    assert (lineage["family"], lineage["architecture"]) == ("llama", "LlamaForCausalLM")
    files = {f["name"]: f for f in lineage["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    weights = (llama_folder / "model.safetensors").read_bytes()
    assert files["model.safetensors"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert lineage["training_data_declared_in"] == "not declared"
    assert json.loads((tmp_path / "base" / LINEAGE).read_text()) == lineage
    # the base's own tokenizer comes with it, and the weights are the folder's
    assert load_tokenizer(tmp_path / "base").get_vocab_size() == 320
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        ours = Transformer.load(tmp_path / "base").eval()(ids)
        theirs = AutoModelForCausalLM.from_pretrained(llama_folder).eval()(ids).logits
    assert (ours - theirs).abs().max() < 1e-4
    again = run_base(llama_folder, tmp_path / "base", BaseConfig(license="apache-2.0"), POLICY,
                     given="tiny-llama")
    assert again == manifest  # up to date: not imported twice


@pytest.mark.parametrize("license_", ["cc-by-nc-4.0", None])
def test_a_base_the_policy_does_not_admit_is_refused_before_anything_is_written(
        llama_folder, tmp_path, license_):
    """Non-commercial, or no license at all (the tiny folder declares none): refused, with
    the way out named; admitted once the recipe's policy lists it."""
    with pytest.raises(RecipeError, match="not admitted by the recipe's license policy"):
        run_base(llama_folder, tmp_path / "base", BaseConfig(license=license_), POLICY)
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.partial").exists()
    if license_:
        manifest = run_base(llama_folder, tmp_path / "base", BaseConfig(license=license_),
                            [*POLICY, "CC-BY-NC-4.0"])
        assert manifest["lineage"]["license"] == "CC-BY-NC-4.0"


RECIPE = """
name = "smollm2-lora"
seed = 7
stages = ["base", "sft"]

[ingest]
sources = [{{ path = "{data}/wikipedia-fr-sample" }}]

[base]
model = "{gguf}"

[pretrain]
max_steps = 0
eval_tokens = 512

[eval]
tasks = ["bpb"]
bpb_bytes_per_source = 2000

[sft]
data = ["{chats}"]
max_steps = 3
seq_len = 128
batch_size = 2
warmup_steps = 1
eval_every = 3
checkpoint_every = 3
optimizer = {{ lr = 1e-2, weight_decay = 0.0 }}
lora = {{ rank = 4, alpha = 8 }}
"""

CHATS = [("Corrige : « Le cbat dort. »", "Le chat dort."),
         ("Corrige : « La rner est calme. »", "La mer est calme."),
         ("Corrige : « Il étalt une fols. »", "Il était une fois."),
         ("Corrige : « Le paiu est chaud. »", "Le pain est chaud.")] * 4


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.llama
def test_lora_sft_on_smollm2_exports_as_llama_for_transformers_and_llama_cpp(
        smollm2_gguf_path, llama_cpp, tmp_path):
    from transformers import AutoModelForCausalLM

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]},
        ensure_ascii=False) + "\n" for i, (q, a) in enumerate(CHATS)), encoding="utf-8")
    recipe_path = tmp_path / "recipe.toml"
    recipe_path.write_text(RECIPE.format(data=ROOT / "data", gguf=smollm2_gguf_path,
                                         chats=chats), encoding="utf-8")
    run = tmp_path / "run"
    bake(load_recipe(recipe_path), run)
    sft = read_manifest(run / "sft")
    assert sft["lora"]["rank"] == 4 and sft["counts"]["steps"] == 3
    export = run / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    lineage = json.loads((export / LINEAGE).read_text())
    assert (lineage["name"], lineage["license"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct",
                                                     "Apache-2.0")
    card = (export / "README.md").read_text()
    assert "base_model:" in card and "SmolLM2-135M-Instruct" in card and "Apache-2.0" in card

    ours = Transformer.load(export).eval()
    base = Transformer.load(run / "base").eval()
    tokenizer = load_tokenizer(export)
    text = tokenizer.decode(tokenizer.encode("<|im_start|>user\nCorrige : « Le cbat dort "
                                             "sur le tapis. »<|im_end|>\n<|im_start|>"
                                             "assistant\n").ids, skip_special_tokens=False)
    prompt = tokenizer.encode(text).ids
    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = ours(ids)
        assert (logits - base(ids)).abs().max() > 1e-2  # the adapter was trained and merged
        hf = AutoModelForCausalLM.from_pretrained(export, attn_implementation="sdpa").eval()
        assert type(hf).__name__ == "LlamaForCausalLM"
        assert (hf(ids).logits - logits).abs().max() < 1e-4

    # f32: the same weights in llama.cpp, whose kernels sum in another order (~1e-6 of a
    # logit), far from the gaps greedy decoding chooses across here
    path = export_gguf(export, tmp_path / "lora-f32.gguf", "f32")
    end = tokenizer.token_to_id("<|im_end|>")
    mine = generate(ours, prompt, 16, temperature=0, stop_ids={end})
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
    try:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
        theirs = []
        for token in islice(llm.generate(prompt, temp=0.0, repeat_penalty=1.0), 16):
            theirs.append(token)
            if token == end:
                break
    finally:
        llm.close()
    assert len(mine) >= 4 and theirs == mine
