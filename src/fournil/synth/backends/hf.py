"""A local transformers causal LM: the tokenizer's chat template, then `generate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fournil.synth.generator import GenRequest, GenResult, OnResult, run_serially, truncate_at_stop


class HFGenerator:
    """A local transformers causal LM (a folder, or a .gguf file that transformers
    dequantises): the tokenizer's chat template, then `generate` — greedy at temperature 0,
    else sampling seeded per request, so a result does not depend on its batch."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from fournil.model.hf import hf_stop_ids, load_hf_model

        self.path = Path(path)
        self.model, self.tokenizer = load_hf_model(self.path, device)
        # the ids `fournil serve` stops at too, so both give the same greedy text
        self.eos = sorted(hf_stop_ids(self.model, self.tokenizer))
        self.id = f"hf:{self.path.name}"

    def _one(self, r: GenRequest) -> GenResult:
        import torch

        ids = self.tokenizer.apply_chat_template(r.chat(), add_generation_prompt=True,
                                                 return_dict=False)
        prompt = torch.tensor([ids], device=self.model.device)
        sampling: dict = {"do_sample": False}
        if r.temperature > 0:
            torch.manual_seed(r.seed)
            sampling = {"do_sample": True, "temperature": r.temperature, "top_p": r.top_p,
                        "top_k": 0}
        with torch.inference_mode():
            out = self.model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=r.max_tokens,
                eos_token_id=self.eos, pad_token_id=self.eos[0] if self.eos else None,
                stop_strings=list(r.stop) or None, tokenizer=self.tokenizer, **sampling)
        new = out[0, prompt.shape[1]:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return GenResult(truncate_at_stop(text, r.stop), prompt_tokens=len(ids),
                         completion_tokens=len(new))

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        return run_serially(self._one, requests, self.id, progress, on_result)
