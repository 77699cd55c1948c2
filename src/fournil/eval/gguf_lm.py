"""A GGUF file through llama.cpp (llama-cpp-python) behind the `LanguageModel` interface, so
that `fournil eval --model FILE.gguf` and `fournil correct` run a quantised model the way
people deploy it: llama.cpp's own tokenizer, its kernels, the chat template the file carries.

Every position's logits are kept (`logits_all`), which is what scoring a text and verifying a
draft several tokens at a time need; the context holds one sequence, cut back by moving
llama.cpp's token count (its next `eval` drops the cache past it).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fournil.eval.language_model import LanguageModel, PromptTooLong
from fournil.formats.token_trie import ROUND_TRIP_PROBE, checked_token_bytes
from fournil.model.copy_decoding import Scorer


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ImportError("a GGUF model needs llama-cpp-python: pip install 'fournil[llama]' "
                          "(it compiles llama.cpp)") from None
    return llama_cpp


class LlamaCppScorer(Scorer):
    """llama.cpp's context as a `Scorer`: one per model, since the context is the cache."""

    def __init__(self, llm) -> None:
        super().__init__()
        self.llm = llm
        llm.reset()

    def _forward(self, ids: list[int]) -> torch.Tensor:
        self.llm.eval(ids)
        n = self.llm.n_tokens
        return torch.from_numpy(self.llm.scores[n - len(ids):n].copy())

    def _truncate(self, length: int) -> None:
        self.llm.n_tokens = length


class LlamaCppLM(LanguageModel):
    """A GGUF file: chats rendered with its own template (llama-cpp-python's Jinja2 chat
    formatter, as its chat completions do), answered greedily."""

    def __init__(self, path: str | Path, name: str | None = None, n_ctx: int = 4096,
                 threads: int | None = None) -> None:
        llama_cpp = _llama_cpp()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        self.name = name or str(path)
        self.device = torch.device("cpu")
        # llama-cpp-python's default is half the host's cores for one-token steps: give it
        # the cores this process may use, as torch takes them, for both kinds of pass
        threads = threads or len(os.sched_getaffinity(0))
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=512, logits_all=True,
                                   verbose=False)
        self.model = self.llm
        self.n_parameters = int(llama_cpp.llama_model_n_params(self.llm.model))
        self.max_len = n_ctx
        metadata = self.llm.metadata
        add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.bos = self.llm.token_bos() if add_bos else None
        self.prefix_id = self.llm.token_bos() if self.llm.token_bos() >= 0 else (
            self.llm.token_eos())
        im_end = self.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        self.stop_ids = sorted({self.llm.token_eos(), *(im_end if len(im_end) == 1 else [])})
        self.end_id = im_end[0] if len(im_end) == 1 else self.llm.token_eos()
        template = metadata.get("tokenizer.chat_template")
        if template is None:
            raise ValueError(f"{self.path}: the GGUF has no chat template")
        specials = [self.llm.detokenize([i], special=True).decode("utf-8", "replace")
                    for i in (self.llm.token_eos(), self.llm.token_bos())]
        self._format = Jinja2ChatFormatter(template, eos_token=specials[0],
                                           bos_token=specials[1])
        self._scorer: LlamaCppScorer | None = None

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.llm.detokenize(list(ids), special=not skip_special).decode("utf-8",
                                                                               "replace")

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        prompt = self._format(messages=list(messages)).prompt
        ids = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        return ids if self.bos is None or ids[:1] == [self.bos] else [self.bos, *ids]

    def new_scorer(self) -> Scorer:
        return LlamaCppScorer(self.llm)

    def token_bytes(self) -> list[bytes | None]:
        """Each token's piece as llama.cpp writes it out (raw bytes for a byte-level
        vocabulary); a control token writes nothing and is None."""
        llama_cpp = _llama_cpp()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        buf = ctypes.create_string_buffer(256)
        out: list[bytes | None] = []
        for i in range(self.llm.n_vocab()):
            n = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, False)
            out.append(buf.raw[:n] if n > 0 else None)
        return checked_token_bytes(out, self.encode(ROUND_TRIP_PROBE), self.decode,
                                   f"llama.cpp, {self.path.name}")

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        self._scorer = None  # the context is about to hold other text
        rows = []
        for row in ids.tolist():
            self.llm.reset()
            self.llm.eval(row)
            rows.append(torch.from_numpy(self.llm.scores[:len(row)].copy()))
        return torch.stack(rows)

    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str:
        ids = self.chat_ids(messages)
        if len(ids) >= self.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.max_len}")
        if self._scorer is None:
            self._scorer = self.new_scorer()
        logits = self._scorer.start(ids)
        out: list[int] = []
        for _ in range(min(max_new_tokens, self.max_len - len(ids))):
            token = int(logits.argmax())
            out.append(token)
            if token in self.stop_ids:
                break
            logits = self._scorer.feed([token])[-1]
        return self.decode(out)
