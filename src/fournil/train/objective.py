"""What a pretraining step minimises: next-token cross-entropy on the data, optionally mixed
with logit distillation from a teacher and multi-token prediction.

    loss = CE                                            (plain)
    loss = alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE      (with a teacher)
    loss += mtp.weight * mean over depths of CE(depth k)  (with MTP heads)

One module holds the model and the MTP heads (which use the model's embedding and head
outside its own forward), so that DDP or FSDP wraps a single module whose forward returns the
loss. The teacher is frozen and not a submodule: it is neither trained, nor saved, nor
wrapped. The data cross-entropy is always returned apart (`parts["ce"]`), so runs with and
without the extra terms log comparable losses.
"""

from __future__ import annotations

import torch
from torch import nn

from fournil.model.linear_ce import IGNORE_INDEX, linear_cross_entropy
from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer, cross_entropy
from fournil.train.config import DistillConfig
from fournil.train.distill import distillation_loss


class PretrainObjective(nn.Module):
    def __init__(self, model: Transformer, mtp: MTPHeads | None = None, mtp_weight: float = 0.0,
                 teacher: Transformer | None = None,
                 distill: DistillConfig | None = None) -> None:
        super().__init__()
        self.model, self.mtp, self.mtp_weight = model, mtp, mtp_weight
        self._teacher = [teacher] if teacher is not None else []  # a list: not a submodule
        self.distill = distill or DistillConfig()

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to minimise, detached parts for logging: `ce`, and `kl` / `mtp` if on)."""
        hidden = self.model.hidden_states(input_ids)
        if self._teacher:
            with torch.no_grad():
                teacher_logits = self._teacher[0](input_ids)
            loss, parts = distillation_loss(self.model.lm_head(hidden), teacher_logits, targets,
                                            self.distill.temperature, self.distill.alpha)
        else:  # no logits needed afterwards: the head and its loss fused, chunk by chunk
            loss = linear_cross_entropy(hidden, self.model.lm_head.weight, targets)
            parts = {"ce": loss.detach()}
        if self.mtp is not None:
            mtp_loss = self.mtp(self.model, hidden, input_ids, targets)
            loss = loss + self.mtp_weight * mtp_loss
            parts["mtp"] = mtp_loss.detach()
        return loss, parts


def kept_positions_loss(model: Transformer, input_ids: torch.Tensor, targets: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """`model.loss(input_ids, targets, reduction)` ("mean" or "sum") with the LM head run on
    the kept targets' hidden states alone.

    Fine-tuning masks most positions (prompts and padding: three in four of the OCR-correction
    chats' positions), and the head over a 49,152-entry vocabulary is a fifth of a SmolLM2
    LoRA step's FLOPs, so the kept positions are gathered before the head: the loss is the
    same sum, and a masked position's hidden state gets the zero gradient it got before."""
    hidden = model.hidden_states(input_ids)
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[keep], targets[keep]
    if type(model.lm_head) is not nn.Linear:  # an adapter wrapped around the head must run
        return cross_entropy(model.lm_head(hidden), targets, reduction)
    return linear_cross_entropy(hidden, model.lm_head.weight, targets, reduction)
