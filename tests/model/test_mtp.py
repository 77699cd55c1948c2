import math

import pytest
import torch
from safetensors import safe_open

from fournil.core.validation import RecipeError
from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.mtp import FILENAME, MTPHeads
from fournil.model.transformer import Transformer
from fournil.train.config import MTPConfig
from fournil.train.muon import OptimizerConfig, make_optimizer


def tiny_model(vocab: int = 320, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=8, intermediate_size=64, max_seq_len=64))


def random_batch(vocab: int, batch: int = 4, length: int = 24, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, vocab, (batch, length + 1),
                        generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:].clone()


def joint_loss(model: Transformer, mtp: MTPHeads, x: torch.Tensor, y: torch.Tensor,
               weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What the trainer computes: the main loss and `weight` times the MTP loss, sharing one
    pass through the model."""
    hidden = model.hidden_states(x)
    main = torch.nn.functional.cross_entropy(model.lm_head(hidden).flatten(0, 1), y.flatten())
    aux = mtp(model, hidden, x, y)
    return main + weight * aux, aux


@pytest.mark.parametrize("depth", [1, 3])
def test_mtp_loss_is_finite_and_trains_model_and_heads(depth):
    model = tiny_model()
    mtp = MTPHeads(model.config, depth)
    x, y = random_batch(320)
    y[0, 5:9] = -100  # ignored targets stay ignored at every depth
    loss, aux = joint_loss(model, mtp, x, y, weight=0.3)
    assert math.isfinite(aux.item())
    # at init the heads know nothing: about ln(vocab) nats per token
    assert abs(aux.item() - math.log(320)) < 0.5
    loss.backward()
    for name, p in [*model.named_parameters(), *mtp.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the heads share the model's embedding and head instead of holding copies
    shared = {id(model.model.embed_tokens.weight), id(model.lm_head.weight)}
    assert shared.isdisjoint(id(p) for p in mtp.parameters())


def test_mtp_sequence_too_short_is_an_error():
    model = tiny_model()
    x, y = random_batch(320, length=2)
    with pytest.raises(ValueError, match="needs sequences longer than 2 tokens"):
        MTPHeads(model.config, depth=2)(model, model.hidden_states(x), x, y)


def paired_batch(vocab: int, seed: int, batch: int = 8, length: int = 32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens, each written twice (a a b b c c ...): a token is predictable exactly when
    it repeats the one before it, which is every other position."""
    pairs = torch.randint(3, vocab, (batch, length // 2 + 1),
                          generator=torch.Generator().manual_seed(seed))
    ids = pairs.repeat_interleave(2, dim=1)
    return ids[:, :length], ids[:, 1:length + 1]


def test_each_depth_predicts_the_right_future_token():
    """On `a a b b c c ...`, depth k at position t is given token t+k and must predict token
    t+k+1: a repeat half of the time, a fresh random token otherwise, so a correct head ends
    near 0.5 ln(vocab) nats. A head that saw its own target would reach ~0; one predicting a
    token further ahead would stay at ln(vocab). (Measured: 0.52, 0.0001 and 0.98 ln(vocab).)"""
    vocab = 32
    model = tiny_model(vocab)
    mtp = MTPHeads(model.config, depth=2)
    opt = make_optimizer([model, mtp], OptimizerConfig(name="adamw", lr=2e-2))
    aux_losses = []
    for step in range(70):
        x, y = paired_batch(vocab, seed=step)
        loss, aux = joint_loss(model, mtp, x, y, weight=1.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        aux_losses.append(aux.item())
    final = sum(aux_losses[-10:]) / 10
    assert 0.35 * math.log(vocab) < final < 0.75 * math.log(vocab), final


def test_mtp_heads_are_not_in_the_saved_or_exported_model(tiny_tokenizer_dir, tmp_path):
    model = tiny_model()
    mtp = MTPHeads(model.config, depth=1)
    opt = make_optimizer([model, mtp], OptimizerConfig(name="muon"))
    for step in range(3):
        x, y = random_batch(320, seed=step)
        loss, _ = joint_loss(model, mtp, x, y, weight=0.3)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    qwen3_keys = set(model.state_dict()) - {"lm_head.weight"}  # tied: HF omits the head
    out = export_hf(model, tmp_path / "export", tiny_tokenizer_dir, "# tiny\n")
    with safe_open(out / "model.safetensors", "pt") as f:
        assert set(f.keys()) == qwen3_keys
    model.save(tmp_path / "ckpt")
    with safe_open(tmp_path / "ckpt" / "model.safetensors", "pt") as f:
        assert set(f.keys()) == qwen3_keys
    # the export loads strictly as a plain model and computes what the trained model does
    exported = Transformer.load(out)
    assert torch.equal(exported(x), model(x))

    # the heads have their own file in the checkpoint, and resume from it exactly
    mtp.save(tmp_path / "ckpt")
    with safe_open(tmp_path / "ckpt" / FILENAME, "pt") as f:
        assert all(k.startswith("depths.0.") for k in f.keys())
    resumed = MTPHeads(model.config, depth=1)
    resumed.load(tmp_path / "ckpt")
    hidden = model.hidden_states(x)
    assert torch.equal(resumed(model, hidden, x, y), mtp(model, hidden, x, y))


def test_mtp_weights_of_another_depth_are_refused(tmp_path):
    model = tiny_model()
    MTPHeads(model.config, depth=2).save(tmp_path)
    with pytest.raises(ValueError, match="another depth or model"):
        MTPHeads(model.config, depth=1).load(tmp_path)
    with pytest.raises(FileNotFoundError, match="trained without MTP"):
        MTPHeads(model.config, depth=1).load(tmp_path / "nowhere")


@pytest.mark.parametrize("field, value", [("depth", -1), ("depth", 9), ("weight", -0.1)])
def test_bad_mtp_config_names_the_key(field, value):
    with pytest.raises(RecipeError, match=f"pretrain.mtp.{field}:"):
        MTPConfig(**{field: value}).validate("pretrain.mtp")
