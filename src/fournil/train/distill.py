"""Logit distillation from a teacher that shares the student's tokenizer (Hinton et al., 2015).

    loss = alpha * T^2 * KL( softmax(teacher / T) || softmax(student / T) )
           + (1 - alpha) * CE(student, targets)

averaged over the positions whose target is not -100. The T^2 keeps the gradient of the KL term
on the same scale whatever the temperature (softening divides it by T^2), so alpha means the
same thing at every T. Both terms are computed in float32 over chunks of positions, each chunk
recomputed in the backward pass instead of kept: [positions, vocab] float32 tensors are the
largest thing in a distillation step, and this bounds them to one chunk.

The teacher is a fournil checkpoint or an HF Qwen3 folder (`Transformer.load` reads both) whose
token ids mean the same strings as the student's: same vocabulary size, and the same
id-to-token map when both folders carry a tokenizer.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fournil.model.transformer import Transformer, read_config
from fournil.tokenizer.train import load_tokenizer

# Float32 elements per chunk of [positions, vocab] (256 MB): 8k positions at a 8k vocabulary,
# 430 at Qwen3's 152k.
CHUNK_ELEMENTS = 1 << 26


def _sums(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
          temperature: float) -> torch.Tensor:
    """[KL summed over valid rows, CE summed over valid rows] for one chunk, in float32."""
    student, teacher = student.float(), teacher.float()
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    kl = torch.where(targets != -100, kl, 0.0).sum()
    ce = F.cross_entropy(student, targets, ignore_index=-100, reduction="sum")
    return torch.stack([kl, ce])


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor, temperature: float, alpha: float,
                      chunk_size: int | None = None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, parts): logits [..., vocab] in any dtype, targets [...] with -100 = ignored.
    `parts` holds the detached `kl` (at temperature T, without the T^2) and `ce`, each a mean
    over valid positions, for logging. `chunk_size` is positions per chunk (default: as many
    as fit in CHUNK_ELEMENTS)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: the teacher must share the "
                         "student's tokenizer and see the same batch")
    if student_logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(student_logits.shape)} do not match targets "
                         f"{tuple(targets.shape)}")
    vocab = student_logits.size(-1)
    student = student_logits.reshape(-1, vocab)
    teacher = teacher_logits.detach().reshape(-1, vocab)
    flat_targets = targets.reshape(-1)
    chunk = chunk_size or max(1, CHUNK_ELEMENTS // vocab)
    recompute = student.requires_grad and torch.is_grad_enabled()
    sums = torch.zeros(2, device=student.device)
    for start in range(0, student.size(0), chunk):
        args = (student[start:start + chunk], teacher[start:start + chunk],
                flat_targets[start:start + chunk], temperature)
        sums = sums + (checkpoint(_sums, *args, use_reentrant=False) if recompute
                       else _sums(*args))
    count = (flat_targets != -100).sum().clamp(min=1)
    kl, ce = sums[0] / count, sums[1] / count
    loss = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    return loss, {"kl": kl.detach(), "ce": ce.detach()}


def load_teacher(path: str | Path, tokenizer_dir: str | Path,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None
                 ) -> Transformer:
    """The teacher in `path`, frozen and in eval mode, after checking that it speaks the
    tokenizer in `tokenizer_dir` (the student's)."""
    path, tokenizer_dir = Path(path), Path(tokenizer_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"distill.teacher: {path} is not a folder")
    student_tok = load_tokenizer(tokenizer_dir)
    vocab_size = student_tok.get_vocab_size()
    teacher_vocab = read_config(path).vocab_size
    if teacher_vocab != vocab_size:
        raise ValueError(f"{path}: teacher vocabulary has {teacher_vocab} tokens, the student's "
                         f"tokenizer ({tokenizer_dir}) has {vocab_size}: distillation needs "
                         "a teacher trained with the same tokenizer")
    if (path / "tokenizer.json").exists():
        mine = {i: t for t, i in student_tok.get_vocab(with_added_tokens=True).items()}
        theirs = {i: t for t, i in load_tokenizer(path).get_vocab(with_added_tokens=True).items()}
        differ = sorted(i for i in mine.keys() | theirs.keys() if mine.get(i) != theirs.get(i))
        if differ:
            i = differ[0]
            raise ValueError(f"{path}: tokenizer.json maps ids to other tokens than "
                             f"{tokenizer_dir / 'tokenizer.json'} ({len(differ)} ids differ, "
                             f"e.g. id {i}: {theirs.get(i)!r} vs {mine.get(i)!r}): "
                             "distillation needs the same tokenizer")
    teacher = Transformer.load(path, device=device, dtype=dtype)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher
