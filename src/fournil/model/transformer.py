"""A decoder-only transformer, layer for layer the same as Hugging Face `Qwen3ForCausalLM`
and, with the config's switches, `Qwen2ForCausalLM`, `LlamaForCausalLM` and
`MistralForCausalLM`.

Pre-norm blocks with RMSNorm, rotary position embeddings (rope.py: with the base's scaling),
grouped-query attention with a per-head RMSNorm on queries and keys (QK-norm, Qwen3 only), a
SwiGLU MLP, biases where the family has them, a sliding window where it has one, and
optionally tied input/output embeddings. Parameter names are HF's (the four families share
them), so `state_dict()` is directly an HF checkpoint and an export is a plain save.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from fournil.model.config import TransformerConfig
from fournil.model.folder import FORMAT_KEY, FORMAT_VERSION, expected_keys, read_weights
from fournil.model.folder import read_config as read_config  # re-exported: its old home
from fournil.model.linear_ce import linear_cross_entropy
from fournil.model.rope import rope_tables

# SDPA learned grouped-query attention in torch 2.5; before that we repeat k/v ourselves.
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """Computed in float32 whatever the input dtype, as HF does, so bf16 runs stay stable."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        # Same as HF in fp32 or bf16; the final cast only matters under autocast, where it keeps
        # activations in the low-precision dtype instead of promoting them to fp32.
        return (self.weight * x.to(dtype)).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos/sin: [T, D] (broadcast over batch and heads)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of past positions, preallocated for `batch_size` sequences of up to
    `max_len` tokens, for incremental decoding. `pos` is the number of positions already
    filled; it is also the RoPE position of the next token fed to the model."""

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_len: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (num_layers, batch_size, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes this step's k/v ([B, H, T, D]) at `pos`, and returns all keys and values up to
        and including them. `pos` itself moves once every layer is done (see `advance`)."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.pos += num_tokens

    def reset(self) -> None:
        self.pos = 0


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer  # our slot in the KV cache
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.sliding_window = cfg.sliding_window
        bias = cfg.qkv_bias
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=cfg.o_bias)
        # QK-norm: per head, over head_dim only, before RoPE (Qwen3's placement); absent in the
        # other families, so that the state dict has exactly their keys
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer, k, v)
        window = self.sliding_window
        if window is not None and past + T > window:
            # Mistral's sliding window, once reached: position i sees i - window + 1 .. i. Only
            # then an explicit mask, so that every other case keeps SDPA's fast paths.
            q_pos = torch.arange(past, past + T, device=x.device)[:, None]
            k_pos = torch.arange(past + T, device=x.device)[None, :]
            mask, causal = (q_pos >= k_pos) & (q_pos - k_pos < window), False
        elif past == 0:
            mask, causal = None, True  # training and prefill: plain causal attention
        elif T == 1:
            mask, causal = None, False  # one new token sees every cached position
        else:
            # T new tokens after `past` cached ones: SDPA's is_causal aligns the triangle
            # top-left, which is wrong here, so spell the bottom-right mask out.
            q_pos = torch.arange(past, past + T, device=x.device)
            mask, causal = q_pos[:, None] >= torch.arange(past + T, device=x.device)[None, :], False

        gqa = {}
        if self.num_kv_heads != self.num_heads:
            if _SDPA_GQA:
                gqa = {"enable_gqa": True}
            else:
                n_rep = self.num_heads // self.num_kv_heads
                k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        bias = cfg.mlp_bias
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """HF's `model.` prefix: embeddings, blocks, final norm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def init_parameters(module: nn.Module, num_layers: int, std: float = 0.02) -> None:
    """Normal(0, std) for matrices and embeddings, the residual-stream projections (o_proj,
    down_proj) scaled by 1/sqrt(2 * num_layers), norms at one, biases (a base's) at zero."""
    for name, p in module.named_parameters():
        if name.endswith("norm.weight"):
            nn.init.ones_(p)
        elif name.endswith(".bias"):
            nn.init.zeros_(p)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * num_layers))
        else:
            nn.init.normal_(p, mean=0.0, std=std)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("the config has no vocabulary size; build the model from "
                             "config.with_vocab(tokenizer.get_vocab_size())")
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Not persistent: derived from the config, and absent from HF checkpoints.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Normal(0, 0.02) for matrices and embeddings (HF's initializer_range), with the two
        projections that write into the residual stream (o_proj, down_proj) scaled by
        1/sqrt(2 * num_layers) as in GPT-2, so the residual stream's variance does not grow
        with depth. Norms start at one. Also (re)builds the RoPE tables, which lets a model
        built on the meta device be materialised with `to_empty()` then `init_weights()`."""
        init_parameters(self, self.config.num_layers)
        self.init_rope()

    def init_rope(self) -> None:
        device = self.model.embed_tokens.weight.device
        if device.type == "meta":
            device = None  # placeholder tables; rebuilt after materialisation
        cfg = self.config
        self.rope_cos, self.rope_sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta,
                                                   cfg.rope_scaling, device)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def new_kv_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        cfg = self.config
        return KVCache(cfg.num_layers, batch_size, cfg.num_kv_heads, cfg.head_dim,
                       max_len or cfg.max_seq_len, device=self.device, dtype=self.dtype)

    def hidden_states(self, input_ids: torch.Tensor, kv_cache: KVCache | None = None
                      ) -> torch.Tensor:
        """The final-norm output [B, T, hidden_size], before the LM head."""
        T = input_ids.size(1)
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len "
                             f"({self.config.max_seq_len})")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            x = block(x, cos, sin, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.model.norm(x)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """logits [B, T, vocab] in the model's dtype; with `targets` ([B, T], -100 = ignored),
        (logits, mean cross-entropy)."""
        logits = self.lm_head(self.hidden_states(input_ids, kv_cache))
        if targets is None:
            return logits
        return logits, cross_entropy(logits, targets)

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """The training loss alone, "mean" or "sum" over the kept targets, with the head fused
        into it (linear_ce.py: no logits are kept); `reduction="none"` gives per-token losses
        [B, T] (for bits-per-byte)."""
        hidden = self.hidden_states(input_ids)
        # fused only over a plain head: an adapter wrapped around it (LoRA) must run
        if reduction == "none" or type(self.lm_head) is not nn.Linear:
            return cross_entropy(self.lm_head(hidden), targets, reduction)
        return linear_cross_entropy(hidden, self.lm_head.weight, targets, reduction)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once). `exclude_embeddings` leaves out the
        input embedding table, as HF's `num_parameters` does; an untied lm_head still counts."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.model.embed_tokens.weight))
        return sum(p.numel() for p in params.values())

    # -- checkpoints --------------------------------------------------------------------

    def weights_for_save(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The state dict as safetensors wants it: on CPU, contiguous, and without lm_head.weight
        when tied (safetensors refuses shared tensors; HF omits it too)."""
        state = self.state_dict()
        if self.config.tie_embeddings:
            del state["lm_head.weight"]
        return {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in state.items()}

    def save(self, directory: str | Path) -> Path:
        """`model.safetensors` and our `config.json`, each written atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "model.safetensors.tmp"
        save_file(self.weights_for_save(), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / "model.safetensors")
        config = {FORMAT_KEY: FORMAT_VERSION, **self.config.to_dict()}
        tmp = directory / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / "config.json")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu",
             dtype: torch.dtype | None = None) -> Transformer:
        """From one of our checkpoints, or from an HF Qwen3, Qwen2, Llama or Mistral folder
        (ours or anyone's: one file or shards; folder.py), with strict key and shape checks.
        `dtype=None` keeps the stored dtype (float32 if the files mix dtypes)."""
        directory = Path(directory)
        config = read_config(directory)
        return cls.from_state_dict(config, read_weights(directory, config, device, dtype))

    @classmethod
    def from_state_dict(cls, config: TransformerConfig, state: dict[str, torch.Tensor]
                        ) -> Transformer:
        """A model holding these tensors (HF names, without a tied head), not copied."""
        missing = set(expected_keys(config)) - set(state)
        unexpected = set(state) - set(expected_keys(config))
        if missing or unexpected:
            raise ValueError(f"state dict does not match the config: missing "
                             f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
        # Built on the meta device so a large model is not initialised just to be overwritten.
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, strict=not config.tie_embeddings, assign=True)
        if config.tie_embeddings:  # assign=True replaced the shared Parameter: tie again
            model.lm_head.weight = model.model.embed_tokens.weight
        model.init_rope()
        return model


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in float32 whatever the logits' dtype; -100 targets are ignored."""
    loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=-100,
                           reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss
