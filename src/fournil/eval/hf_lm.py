"""Any causal LM folder `transformers` loads, behind the `LanguageModel` interface: its own
tokenizer and chat template, greedy answers in batches with `generate`, and a DynamicCache as
the `Scorer` of copy-biased decoding."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import torch

from fournil.core.device import pick_device
from fournil.eval.language_model import LanguageModel, PromptTooLong
from fournil.formats.token_trie import token_bytes
from fournil.model.copy_decoding import CopyBias, CopyCursor, Scorer


class HFScorer(Scorer):
    """A transformers causal LM with its DynamicCache (cut back with `crop`)."""

    def __init__(self, model) -> None:
        from transformers import DynamicCache

        super().__init__()
        self.model, self.cache = model, DynamicCache()
        # transformers 5 renames past_key_values to cache (the old name warns, then goes)
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"

    @torch.inference_mode()
    def _forward(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids], device=self.model.device)
        return self.model(input_ids=x, use_cache=True, **{self._cache_arg: self.cache}
                          ).logits[0].float()

    def _truncate(self, length: int) -> None:
        # a negative crop removes that many positions, in transformers 4 and 5 alike
        self.cache.crop(length - self.cache.get_seq_length())


class HFLM(LanguageModel):
    """Any causal LM folder `transformers` loads: chats go through the tokenizer's own chat
    template and `model.generate` (greedy)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.path = Path(path)
        self.name = name or str(path)
        self.device = pick_device(str(device))
        # copy-biased answers in lockstep batches (see answer_batch): where batches are cheap
        self.lockstep = self.device.type != "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        self.model.to(self.device).eval()
        config = self.model.config
        self.max_len = (getattr(config, "max_position_embeddings", None)
                        or self.tokenizer.model_max_length)
        tok = self.tokenizer
        # The BOS when the tokenizer puts one in front of text (as the model was trained)
        probe = tok("a").input_ids
        self.bos = tok.bos_token_id if probe and probe[0] == tok.bos_token_id else None
        eos = tok.eos_token_id
        # as lm-evaluation-harness: the BOS token even when the tokenizer does not add it
        self.prefix_id = tok.bos_token_id if tok.bos_token_id is not None else eos
        if self.prefix_id is None:
            raise ValueError(f"{path}: the tokenizer has neither a BOS nor an EOS token")
        stops = set()
        for ids in (self.model.generation_config.eos_token_id, eos,
                    tok.convert_tokens_to_ids("<|im_end|>")):
            stops |= set(ids if isinstance(ids, list) else [ids])
        self.stop_ids = sorted(i for i in stops if i is not None and i != tok.unk_token_id)
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.end_id = im_end if im_end in self.stop_ids else self.stop_ids[0]
        # Greedy, replacing the folder's sampling defaults (transformers merges the two and
        # warns about sampling flags on a greedy call otherwise).
        self.model.generation_config = GenerationConfig(
            do_sample=False, eos_token_id=self.stop_ids,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else self.prefix_id)

    def encode(self, text: str) -> list[int]:
        # verbose=False: a held-out document longer than the context is expected (it is read
        # in windows), not the mistake transformers warns about
        return self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits.float()

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True)
        ids = self.encode(text)
        return ids if ids[:1] == [self.bos] else self.with_bos(ids)

    @torch.inference_mode()
    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str:
        ids = self.chat_ids(messages)
        if len(ids) >= self.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.max_len}")
        x = torch.tensor([ids], device=self.device)
        out = self.model.generate(x, attention_mask=torch.ones_like(x),
                                  max_new_tokens=min(max_new_tokens, self.max_len - len(ids)))
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special,
                                     clean_up_tokenization_spaces=False)

    def new_scorer(self) -> Scorer:
        return HFScorer(self.model)

    def token_bytes(self) -> list[bytes | None]:
        # a fast transformers tokenizer wraps the `tokenizers` one that is read
        return token_bytes(self.tokenizer.backend_tokenizer)

    @torch.inference_mode()
    def answer_batch(self, chats: Sequence[Sequence[dict]], budgets: Sequence[int],
                     sources: Sequence[str] | None = None, bias: CopyBias | None = None
                     ) -> list[str]:
        """All chats in one `generate` (padded on the left), the copy bias applied as a
        logits processor: every row advances one token a step, so a batch costs the same
        whatever each row does (a model that rewrites everything, or one that copies).
        Copy-biased on a CPU, one sequence at a time with the draft verified k tokens a pass
        is faster: 8 ICDAR pieces, SmolLM2-135M, 1 thread: 21 s against 55 s in lockstep."""
        if bias is not None and not self.lockstep:
            return super().answer_batch(chats, budgets, sources, bias)
        prompts = [self.chat_ids(c) for c in chats]
        width = max(len(p) for p in prompts)
        if width >= self.max_len:
            raise PromptTooLong(f"a chat of {width} tokens leaves no room to answer in "
                                f"{self.max_len}")
        x = torch.full((len(prompts), width), self.model.generation_config.pad_token_id)
        mask = torch.zeros_like(x)
        for row, ids in enumerate(prompts):
            x[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        processors = None
        if bias is not None:
            from transformers import LogitsProcessorList

            cursors = [self.cursor(s, bias) for s in sources]
            processors = LogitsProcessorList([CopyBiasProcessor(cursors)])
        out = self.model.generate(x.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=min(max(budgets), self.max_len - width),
                                  logits_processor=processors)
        answers = []
        for row, budget in enumerate(budgets):
            new = out[row, width:width + budget].tolist()
            ends = [i for i, t in enumerate(new) if t in self.stop_ids]
            answers.append(self.decode(new[:ends[0]] if ends else new))
        return answers


class CopyBiasProcessor:
    """Copy-biased decoding as a transformers logits processor: each row's token is chosen
    by its `CopyCursor` and made the only one greedy search can pick."""

    def __init__(self, cursors: Sequence[CopyCursor]) -> None:
        self.cursors = cursors
        self.done = [False] * len(cursors)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row, cursor in enumerate(self.cursors):
            if self.done[row]:  # generate pads a finished row whatever its scores
                continue
            token = cursor.choose(scores[row])
            self.done[row] = token in cursor.stops
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores
