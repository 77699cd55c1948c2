import io

import pytest
import torch

from fournil.core.validation import RecipeError
from fournil.model.config import TransformerConfig
from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer
from fournil.train.muon import (
    MuonAdamW,
    OptimizerConfig,
    ReferenceMuon,
    apply_lr_multiplier,
    make_optimizer,
    split_parameters,
)

TEXT = ("Il était une fois, dans un petit village au bord de la mer, une boulangère. "
        "Chaque matin, elle pétrissait la pâte et enfournait le pain avant l'aube. ") * 4

IMPLEMENTATIONS = [ReferenceMuon] + ([torch.optim.Muon] if hasattr(torch.optim, "Muon") else [])


def tiny_model(tie: bool = True, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(
        vocab_size=320, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
        intermediate_size=64, max_seq_len=64, tie_embeddings=tie))


def real_batch(tokenizer_dir, batch: int = 4, length: int = 32) -> tuple[torch.Tensor, ...]:
    ids = torch.tensor(load_tokenizer(tokenizer_dir).encode(TEXT).ids)
    assert ids.numel() > batch * (length + 1)
    rows = ids[:batch * (length + 1)].view(batch, length + 1)
    return rows[:, :-1], rows[:, 1:]


def reference_newton_schulz(g: torch.Tensor) -> torch.Tensor:
    """Keller Jordan's quintic iteration, written out in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm()
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("muon_type", IMPLEMENTATIONS, ids=lambda c: c.__module__)
@pytest.mark.parametrize("shape", [(8, 4), (4, 8)], ids=["tall", "wide"])
@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_two_muon_steps_match_the_reference_math(muon_type, shape, adjust):
    lr, wd, mu = 0.1, 0.1, 0.9
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(2)]
    p = torch.nn.Parameter(w0.clone())
    opt = muon_type([p], lr=lr, weight_decay=wd, momentum=mu, nesterov=True,
                     adjust_lr_fn=adjust)
    for g in grads:
        p.grad = g.clone()
        opt.step()

    rows, cols = shape
    scale = max(1, rows / cols) ** 0.5 if adjust == "original" else 0.2 * max(rows, cols) ** 0.5
    w, m = w0.double(), torch.zeros(shape, dtype=torch.float64)
    for g in grads:
        m = mu * m + (1 - mu) * g.double()
        nesterov = (1 - mu) * g.double() + mu * m
        w = w * (1 - lr * wd) - lr * scale * reference_newton_schulz(nesterov)
    # torch's Newton–Schulz runs in bf16 (a relative error of 1-2% on the update), ours in
    # float32 on CPU; leaving out Nesterov momentum or weight decay, or scaling the lr 10% off,
    # moves the update by 8-35%.
    got, want = w0.double() - p.detach().double(), w0.double() - w
    tolerance = 1e-4 if muon_type is ReferenceMuon else 0.03
    assert (got - want).norm() / want.norm() < tolerance


def run_both(device: str) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter],
                                   ReferenceMuon, torch.optim.Optimizer]:
    params = [torch.nn.Parameter(torch.randn(6, 10, device=device)) for _ in range(2)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours, theirs = ReferenceMuon(params, lr=0.05), torch.optim.Muon(twins, lr=0.05)
    for step in range(3):
        for p, q in zip(params, twins, strict=True):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
            p.grad = p.grad.to(device)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    return params, twins, ours, theirs


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no Muon")
def test_reference_muon_agrees_with_torch_muon_and_shares_its_state():
    params, twins, ours, theirs = run_both("cpu")
    for p, q in zip(params, twins, strict=True):  # float32 against bf16 iterations
        torch.testing.assert_close(p, q, rtol=0, atol=0.05 * 0.05 * 3)
    # the same state layout, so an optimizer.pt moves from a CPU run to a GPU run
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(theirs.state[twins[0]]["momentum_buffer"],
                       ours.state[params[0]]["momentum_buffer"])


@pytest.mark.skipif(not (hasattr(torch.optim, "Muon") and torch.cuda.is_available()),
                    reason="needs CUDA and torch.optim.Muon")
def test_reference_muon_is_torch_muon_bit_for_bit_on_cuda():
    params, twins, _, _ = run_both("cuda")
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_hidden_matrices_go_to_muon_the_rest_to_adamw(tie):
    model = tiny_model(tie)
    mtp = MTPHeads(model.config, depth=1)
    names = {id(p): n for n, p in model.named_parameters()}
    names.update({id(p): "mtp." + n for n, p in mtp.named_parameters()})
    muon, decay, no_decay = (sorted(names[id(p)] for p in group)
                             for group in split_parameters([model, mtp]))

    def block_matrices(prefix: str) -> list[str]:
        return ([f"{prefix}.self_attn.{m}.weight" for m in ("q_proj", "k_proj", "v_proj",
                                                               "o_proj")]
                + [f"{prefix}.mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")])

    expected_muon = block_matrices("model.layers.0") + block_matrices("model.layers.1")
    expected_muon += ["mtp.depths.0.proj.weight"] + block_matrices("mtp.depths.0.block")
    assert muon == sorted(expected_muon)
    assert decay == (["model.embed_tokens.weight"] if tie
                     else ["lm_head.weight", "model.embed_tokens.weight"])
    assert no_decay and all(n.endswith("norm.weight") for n in no_decay)
    assert sorted(muon + decay + no_decay) == sorted(names.values())

    opt = make_optimizer([model, mtp], OptimizerConfig(name="muon", lr=1e-3, muon_lr=0.02))
    assert isinstance(opt, MuonAdamW)
    assert isinstance(opt.muon, ReferenceMuon)  # on CPU: float32 iterations, see muon.py
    assert [g["initial_lr"] for g in opt.param_groups] == [0.02, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in opt.adamw.param_groups] == [0.1, 0.0]


def train_steps(model: Transformer, opt, batches, multipliers) -> list[float]:
    losses = []
    for (x, y), mult in zip(batches, multipliers, strict=True):
        apply_lr_multiplier(opt, mult)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_state_dict_round_trip_resumes_exactly(tiny_tokenizer_dir):
    x, y = real_batch(tiny_tokenizer_dir)
    batches = [(x.roll(i, dims=1), y.roll(i, dims=1)) for i in range(6)]
    mults = [0.5, 1.0, 1.0, 0.8, 0.6, 0.4]
    cfg = OptimizerConfig(name="muon", muon_weight_decay=0.01)

    model = tiny_model()
    opt = make_optimizer(model, cfg)
    train_steps(model, opt, batches[:3], mults[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as the checkpoint does, read back weights_only
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    uninterrupted = train_steps(model, opt, batches[3:], mults[3:])

    resumed_model = tiny_model(seed=1)
    resumed_model.load_state_dict(weights)
    resumed = make_optimizer(resumed_model, cfg)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert train_steps(resumed_model, resumed, batches[3:], mults[3:]) == uninterrupted
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(),
                                                 resumed_model.parameters(), strict=True))

    # without the optimizer state (momentum buffers, Adam moments) the steps differ
    fresh_model = tiny_model(seed=1)
    fresh_model.load_state_dict(weights)
    assert train_steps(fresh_model, make_optimizer(fresh_model, cfg), batches[3:],
                       mults[3:]) != uninterrupted


def test_adamw_state_is_refused_by_muon():
    model = tiny_model()
    adamw_state = make_optimizer(model, OptimizerConfig(name="adamw")).state_dict()
    with pytest.raises(ValueError, match="optimizer.name = 'adamw'"):
        make_optimizer(model, OptimizerConfig(name="muon")).load_state_dict(adamw_state)


@pytest.mark.parametrize("name", ["muon", "adamw"])
def test_a_few_steps_of_training_reduce_the_loss(name, tiny_tokenizer_dir):
    x, y = real_batch(tiny_tokenizer_dir)
    model = tiny_model()
    opt = make_optimizer(model, OptimizerConfig(name=name, lr=1e-2, muon_lr=0.02))
    losses = train_steps(model, opt, [(x, y)] * 25, [1.0] * 25)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("field, value", [("name", "sgd"), ("muon_lr", 0.0),
                                          ("muon_momentum", 1.0), ("muon_adjust_lr", "rms"),
                                          ("beta2", 1.5)])
def test_bad_optimizer_config_names_the_key(field, value):
    with pytest.raises(RecipeError, match=f"pretrain.optimizer.{field}:"):
        OptimizerConfig(**{field: value}).validate("pretrain.optimizer")
