"""Tier 1/2: kia's changes to the training loop compute what the stock modules compute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kia.engines import default_model
from kia.inject.trainer import BF16Head, CPUDropout, KiaTrainer, restore_head, use_bf16_head, use_cpu_dropout

MODEL = Path(default_model())
needs_model = pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="toy model missing")


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_cpu_dropout_drops_at_rate_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = CPUDropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # 400k draws: the standard error is below 0.001
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert abs(y.mean().item() - 1) < 0.01


def test_cpu_dropout_lanes_are_independent_of_position():
    """Four mask entries come from each 64-bit draw: each of the four lanes must drop at rate p."""
    torch.manual_seed(1)
    y = CPUDropout(0.1).train()(torch.ones(1_000_000)).view(-1, 4)
    for lane in range(4):
        assert abs((y[:, lane] == 0).float().mean().item() - 0.1) < 0.003


def test_cpu_dropout_gradient_is_the_mask_and_eval_is_identity():
    torch.manual_seed(2)
    x = torch.randn(8, 30, 64, requires_grad=True)
    d = CPUDropout(0.1).train()
    y = d(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.9
    assert torch.equal(x.grad, expected)
    d.eval()
    assert torch.equal(d(x), x)


def test_cpu_dropout_is_seeded_by_the_global_generator():
    d = CPUDropout(0.1).train()
    x = torch.ones(5000)
    torch.manual_seed(3)
    a = d(x)
    torch.manual_seed(3)
    b = d(x)
    c = d(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_odd_sizes_and_zero_p():
    torch.manual_seed(4)
    x = torch.ones(3, 7)  # 21 activations: not a multiple of the four lanes of a draw
    assert CPUDropout(0.3).train()(x).shape == (3, 7)
    assert torch.equal(CPUDropout(0.0).train()(x), x)


@needs_model
def test_lora_dropouts_are_swapped_and_flops_match_the_trainer(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(MODEL)
    lora = LoraConfig(r=1, lora_alpha=2, lora_dropout=0.1, target_modules=["gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    layers = model.base_model.model.config.num_hidden_layers
    assert use_cpu_dropout(model) == 3 * layers
    swapped = [m for m in model.modules() if isinstance(m, CPUDropout)]
    assert len(swapped) == 3 * layers and all(m.p == 0.1 for m in swapped)
    assert use_cpu_dropout(model) == 0  # already swapped

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    inputs = {"input_ids": torch.ones(8, 30, dtype=torch.long)}
    ours = KiaTrainer(model=model, args=args).floating_point_ops(inputs)
    stock = Trainer(model=model, args=args).floating_point_ops(inputs)
    assert ours == stock > 0


def test_bf16_head_computes_the_fp32_head_to_bf16_precision_and_passes_gradients_down():
    torch.manual_seed(3)
    head = torch.nn.Linear(64, 300, bias=True).requires_grad_(False)
    x = torch.randn(3, 5, 64, requires_grad=True)
    bf = BF16Head(head)
    y, ref = bf(x), head(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    # bf16 keeps 8 bits of mantissa: each product is off by at most 2**-8 of its size
    bound = 2**-7 * (x.abs().unsqueeze(-2) * head.weight.abs()).sum(-1) + 2**-8 * head.bias.abs() + 1e-6
    assert ((y - ref).abs() <= bound).all()
    assert (y - ref).abs().max() > 0  # it did compute in bf16
    grad_out = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    assert torch.allclose(g, g_ref, rtol=0.05, atol=0.05 * g_ref.abs().max().item())
    assert bf.state_dict() == {} and list(bf.parameters()) == []  # nothing of it is saved or trained


@needs_model
def test_the_bf16_head_swaps_in_for_a_frozen_head_only_and_restores_the_tied_original():
    from peft import LoraConfig, get_peft_model

    from kia.inject.model import load_model

    model, _ = load_model(str(MODEL), "none", "cpu")
    model = get_peft_model(model, LoraConfig(r=1, target_modules=["up_proj"]))
    original = model.get_output_embeddings()
    keys = set(model.state_dict())
    x = torch.randint(5, 100, (2, 12))
    with torch.no_grad():
        ref = model(input_ids=x).logits
        assert use_bf16_head(model)
        # the tied head's entry leaves the state dict with it (the embeddings keep the weight)
        assert isinstance(model.get_output_embeddings(), BF16Head)
        assert set(model.state_dict()) == keys - {"base_model.model.lm_head.weight"}
        got = model(input_ids=x).logits
    assert got.dtype == torch.float32 and (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    restore_head(model)
    assert model.get_output_embeddings() is original and set(model.state_dict()) == keys
    assert original.weight is model.get_input_embeddings().weight  # still tied
    original.weight.requires_grad_(True)  # a head that is trained keeps its fp32 weight
    assert not use_bf16_head(model) and model.get_output_embeddings() is original
