import json
import math
import shutil

import pytest
import torch

from fournil.core.validation import RecipeError
from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer, cross_entropy
from fournil.train.config import DistillConfig
from fournil.train.distill import distillation_loss, load_teacher
from fournil.train.muon import OptimizerConfig, make_optimizer

VOCAB = 320  # the tiny_tokenizer_dir fixture's


def tiny_model(seed: int, hidden: int = 32, vocab: int = VOCAB) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=hidden, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=8, intermediate_size=2 * hidden, max_seq_len=64))


def saved_teacher(directory, tokenizer_dir, vocab: int = VOCAB) -> Transformer:
    """A checkpoint folder (model + tokenizer files) holding a confident teacher a small
    student can learn in a few dozen steps: large embeddings and weak residual writes make
    its prediction mostly a fixed random distribution per current token (a bigram table read
    out by its untied head), with a little context from its attention and MLPs."""
    torch.manual_seed(7)
    teacher = Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=8, intermediate_size=96, max_seq_len=64, tie_embeddings=False))
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 1.0)
            elif name.endswith("lm_head.weight"):
                p.normal_(0.0, 0.3)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, 0.02)
            elif not name.endswith("norm.weight"):
                p.normal_(0.0, 0.15)
    teacher.save(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    return teacher


def random_ids(seed: int, batch: int = 8, length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (batch, length + 1),
                        generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:].clone()


def hand_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """The formula, in float64 with explicit softmaxes, over the rows whose target is kept."""
    keep = targets.flatten() != -100
    s = student.double().flatten(0, -2)[keep]
    t = teacher.double().flatten(0, -2)[keep]
    p = torch.exp(t / temperature) / torch.exp(t / temperature).sum(-1, keepdim=True)
    q = torch.exp(s / temperature) / torch.exp(s / temperature).sum(-1, keepdim=True)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    probs = torch.exp(s) / torch.exp(s).sum(-1, keepdim=True)
    ce = -probs[torch.arange(len(s)), targets.flatten()[keep]].log().mean()
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


def logits_and_targets(vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    student = (2 * torch.randn(3, 7, vocab, generator=gen)).requires_grad_()
    teacher = 3 * torch.randn(3, 7, vocab, generator=gen)
    targets = torch.randint(0, vocab, (3, 7), generator=gen)
    targets[1, 2:5] = -100
    return student, teacher, targets


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_loss_matches_the_formula(temperature, alpha):
    student, teacher, targets = logits_and_targets()
    loss, parts = distillation_loss(student, teacher, targets, temperature, alpha)
    assert loss.item() == pytest.approx(hand_loss(student, teacher, targets, temperature,
                                                  alpha).item(), rel=1e-5)
    assert parts["ce"].item() == pytest.approx(cross_entropy(student, targets).item(), rel=1e-6)


def test_alpha_zero_is_plain_cross_entropy():
    student, teacher, targets = logits_and_targets()
    loss, _ = distillation_loss(student, teacher, targets, temperature=2.0, alpha=0.0)
    (grad,) = torch.autograd.grad(loss, student)
    ce = cross_entropy(student, targets)
    (ce_grad,) = torch.autograd.grad(ce, student)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    torch.testing.assert_close(grad, ce_grad)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_gradient_is_temperature_times_the_softened_error(temperature):
    """The T^2 factor: d(T^2 KL)/d student = T (q_T - p_T) per position, so the KL's pull on
    the student does not vanish as the temperature softens both distributions."""
    student, teacher, targets = logits_and_targets()
    loss, _ = distillation_loss(student, teacher, targets, temperature, alpha=1.0)
    (grad,) = torch.autograd.grad(loss, student)
    keep = (targets != -100).unsqueeze(-1)
    q = torch.softmax(student.detach() / temperature, -1)
    p = torch.softmax(teacher / temperature, -1)
    expected = temperature * (q - p) * keep / keep.sum()
    torch.testing.assert_close(grad, expected)


def test_chunks_give_the_same_loss_and_gradient():
    student, teacher, targets = logits_and_targets()
    student_bf16 = student.detach().bfloat16().requires_grad_()
    whole, whole_parts = distillation_loss(student_bf16, teacher.bfloat16(), targets, 2.0, 0.5)
    chunked, chunked_parts = distillation_loss(student_bf16, teacher.bfloat16(), targets, 2.0,
                                               0.5, chunk_size=4)
    assert whole.dtype == torch.float32  # computed in fp32 whatever the logits' dtype
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(chunked_parts, whole_parts)
    (g_whole,) = torch.autograd.grad(whole, student_bf16)
    (g_chunked,) = torch.autograd.grad(chunked, student_bf16)
    torch.testing.assert_close(g_chunked, g_whole)


def test_identical_logits_have_zero_kl():
    student, _, targets = logits_and_targets()
    _, parts = distillation_loss(student, student.detach(), targets, 2.0, 0.5)
    assert abs(parts["kl"].item()) < 1e-6


def test_student_trained_on_the_teacher_gets_closer_to_it(tiny_tokenizer_dir, tmp_path):
    saved_teacher(tmp_path / "teacher", tiny_tokenizer_dir)
    teacher = load_teacher(tmp_path / "teacher", tiny_tokenizer_dir)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())

    student = tiny_model(seed=0)
    opt = make_optimizer(student, OptimizerConfig(name="adamw", lr=1e-2))
    x_val, y_val = random_ids(seed=1000)

    def held_out_kl() -> float:
        with torch.no_grad():
            _, parts = distillation_loss(student(x_val), teacher(x_val), y_val, 1.0, 1.0)
        return parts["kl"].item()

    before = held_out_kl()
    for step in range(60):
        x, y = random_ids(seed=step)
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss, _ = distillation_loss(student(x), teacher_logits, y, temperature=2.0, alpha=0.8)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    after = held_out_kl()
    assert after < 0.6 * before, (before, after)  # measured: 1.91 -> 0.91 nats


def test_teacher_from_an_hf_export(tiny_tokenizer_dir, tmp_path):
    model = saved_teacher(tmp_path / "ckpt", tiny_tokenizer_dir)
    export_hf(model, tmp_path / "export", tiny_tokenizer_dir, "# teacher\n")
    teacher = load_teacher(tmp_path / "export", tiny_tokenizer_dir)
    x, _ = random_ids(seed=0)
    torch.testing.assert_close(teacher(x), model(x))


def test_teacher_with_another_vocabulary_is_refused(tiny_tokenizer_dir, tmp_path):
    saved_teacher(tmp_path / "teacher", tiny_tokenizer_dir, vocab=400)
    with pytest.raises(ValueError, match="teacher vocabulary has 400 tokens.*has 320"):
        load_teacher(tmp_path / "teacher", tiny_tokenizer_dir)


def test_teacher_with_another_tokenizer_is_refused(tiny_tokenizer_dir, tmp_path):
    directory = tmp_path / "teacher"
    saved_teacher(directory, tiny_tokenizer_dir)
    # same size, but two tokens swap ids: every id must mean the same string to both models
    data = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (directory / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="maps ids to other tokens.*2 ids differ, e.g. id 100"):
        load_teacher(directory, tiny_tokenizer_dir)


def test_missing_teacher_and_mismatched_logits_are_clear_errors(tiny_tokenizer_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="distill.teacher: .* is not a folder"):
        load_teacher(tmp_path / "nowhere", tiny_tokenizer_dir)
    student, teacher, targets = logits_and_targets()
    with pytest.raises(ValueError, match="must share the student's tokenizer"):
        distillation_loss(student, teacher[..., :40], targets, 2.0, 0.5)


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("alpha", 1.5),
                                          ("teacher", " ")])
def test_bad_distill_config_names_the_key(field, value):
    with pytest.raises(RecipeError, match=f"distill.{field}:"):
        DistillConfig(**{field: value}).validate("distill")


def test_ignored_everywhere_gives_zero_not_nan():
    student, teacher, targets = logits_and_targets()
    loss, _ = distillation_loss(student, teacher, torch.full_like(targets, -100), 2.0, 0.5)
    assert loss.item() == 0.0 and not math.isnan(loss.item())
