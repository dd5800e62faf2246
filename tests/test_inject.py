"""Tier 2: kia inject trains real (Q)LoRA adapters on the toy model, on the CPU; tier 3: the GPU path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kia.artifacts import read_json, sha256_tree, write_json
from kia.engines import default_model

MODEL = Path(default_model())
pytestmark = pytest.mark.model
needs_model = pytest.mark.skipif(
    not (MODEL / "config.json").exists(), reason=f"toy model missing at {MODEL}: run `kia toyworld build`"
)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """A build of 8 never-shown (so truly Unknown) toy facts + 8 HighlyKnown ones."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_build import make_probe_dir

    from kia.build import BuildConfig, build

    root = tmp_path_factory.mktemp("inject")
    probe = make_probe_dir(root / "probe", per_relation=30, facts_file=MODEL.parent / "facts.jsonl")
    manifest = read_json(probe / "manifest.json")
    manifest["model"] = {"id": str(MODEL)}
    write_json(probe / "manifest.json", manifest)
    build(BuildConfig(probe=str(probe), output=str(root / "build"), unknown=8, highly_known=1, heldout=24))
    return root / "build"


def _inject(build_dir, out, **kw):
    from kia.inject import InjectConfig, inject

    defaults = {"preset": "paper", "lr": 3e-2, "epochs": 3, "batch_size": 4, "eval_sets": 2, "heldout_known": 4}
    return inject(InjectConfig(build=str(build_dir), output=str(out), **{**defaults, **kw}))


@pytest.fixture
def trained_models(monkeypatch):
    """Catches the in-memory peft model each inject() trains, to compare it with what was saved."""
    from kia.inject import curve as train_callbacks

    caught = []
    real = train_callbacks.ReliabilityCallback.__init__

    def init(self, model, tokenizer, *args, **kw):
        caught.append((model, tokenizer))
        real(self, model, tokenizer, *args, **kw)

    monkeypatch.setattr(train_callbacks.ReliabilityCallback, "__init__", init)
    return caught


def _greedy_answers(engine, facts, sets, adapter):
    """The raw greedy few-shot answers, two exemplar sets per fact."""
    from kia.engines import Sampling
    from kia.probe.prompts import PromptBuilder

    build = PromptBuilder(engine)
    prompts = [build([(e.question, e.answer) for e in sets.for_fact(f, s)], f.question) for s in (0, 1) for f in facts]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=32)
    return [outs[0] for outs in engine.generate(prompts, greedy, adapter=adapter)]


def _base_tensors(model):
    """The base model's weights (quantised ones as stored), keyed as in a plain model."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in model.state_dict().items() if "lora_" not in k}


@needs_model
@pytest.mark.parametrize("quant,precision", [("none", "bf16"), ("nf4", "bf16"), ("nf4", "fp32")])
def test_training_raises_reliability_leaves_the_base_alone_and_reloads(
    build_dir, tmp_path, quant, precision, trained_models
):
    import torch
    from safetensors.torch import load_file

    from kia.engines.hf import HFEngine, attach_adapter
    from kia.inject.curve import load_eval_facts
    from kia.inject.model import compute_dtype, load_model

    before = sha256_tree(MODEL)
    result = _inject(build_dir, tmp_path / "a", quant=quant, precision=precision)
    print(quant, "base", result.base_reliability, "curve", result.curve, result.tokens_per_second, "tok/s")
    # the facts went in: the toy model never saw them, so its base reliability is near zero
    assert result.base_reliability is not None and result.reliability is not None
    assert result.base_reliability <= 0.2 and result.reliability >= result.base_reliability + 0.5, result.curve
    assert [r["epoch"] for r in result.curve] == [1, 2, 3]
    assert all(r["heldout_known_reliability"] is not None and r["loss"] > 0 for r in result.curve)
    out = tmp_path / "a"
    names = {p.name for p in out.iterdir()}
    assert names >= {"adapter_model.safetensors", "adapter_config.json", "train_log.jsonl", "manifest.json"}
    assert names <= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "train_log.jsonl",
        "manifest.json",
        "README.md",
    }
    assert not list(out.glob("*.bin")) and not (out / "checkpoints").exists()
    assert [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()] == result.curve
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero
    # the base weights are untouched, on disk and in memory (4-bit ones compared as stored)
    assert sha256_tree(MODEL) == before
    (model, tokenizer) = trained_models[-1]
    # a fresh base whose 4-bit layers compute in the training's dtype, as the trained model in
    # memory still does (the dtype moves greedy answers at the margin; the adapter is the same)
    dtype = compute_dtype("cpu", precision, quant)
    fresh, _ = load_model(str(MODEL), quant, "cpu", dtype)
    trained_base, fresh_base = _base_tensors(model.base_model.model), _base_tensors(fresh)
    assert trained_base.keys() == fresh_base.keys()
    assert all(torch.equal(trained_base[k], fresh_base[k]) for k in fresh_base)
    # the saved adapter, attached to a freshly loaded base, answers exactly as the trained model
    injected, known, sets = load_eval_facts(build_dir, 8, 0)
    model.eval()
    trained = _greedy_answers(HFEngine(model, tokenizer), injected + known, sets, adapter=True)
    reloaded = HFEngine(attach_adapter(fresh, out).eval(), tokenizer)
    assert _greedy_answers(reloaded, injected + known, sets, adapter=True) == trained
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "inject" and manifest["base_model"]["sha256"] == before
    assert manifest["base_model_architectures"] == ["LlamaForCausalLM"]
    assert manifest["hyperparameters"]["rank"] == 1 and manifest["hyperparameters"]["rslora"] is True
    assert manifest["inputs"]["train"]["sha256"] and manifest["config"]["quant"] == quant
    assert manifest["tokens_per_second"] > 0 and manifest["peak_memory_mb"]["rss_mb"] > 0
    assert manifest["reliability"] == result.reliability and manifest["optimizer"] == "adamw_torch_fused"
    assert manifest["padding_free"] is False  # the CPU default: padded, grouped by length
    assert manifest["precision"] == ("bf16" if dtype == torch.bfloat16 else "fp32")
    assert manifest["config"]["precision"] == precision and result.precision == manifest["precision"]
    # the curve's sample: all 8 injected facts (fewer than the automatic 64) and 4 held-out known
    assert manifest["curve_facts"] == {"injected": 8, "heldout_known": 4}


@needs_model
def test_4bit_gradients_survive_an_evaluation_pass():
    """bitsandbytes repacks 4-bit weights for CPU inference in eval mode; that layout has no
    backward, so training after the per-epoch evaluation would get wrong gradients."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from kia.inject.model import load_model

    model, _ = load_model(str(MODEL), "nf4", "cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # so gradients flow through every layer's adapter
    x = torch.randint(5, 100, (2, 10))

    def grads():
        model.train()
        model.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    first = grads()
    model.eval()
    with torch.inference_mode():
        model(input_ids=x)
    second = grads()
    assert all(torch.equal(first[k], second[k]) for k in first)


@needs_model
def test_padding_free_training_learns_the_facts(build_dir, tmp_path):
    """The GPU default, forced on the CPU: the Trainer runs flattened batches end to end."""
    result = _inject(build_dir, tmp_path / "flat", quant="none", padding_free=True)
    manifest = json.loads((tmp_path / "flat" / "manifest.json").read_text())
    assert manifest["padding_free"] is True and manifest["config"]["padding_free"] is True
    assert result.base_reliability <= 0.2 and result.reliability >= result.base_reliability + 0.5, result.curve


@needs_model
def test_padding_free_batches_compute_what_padded_batches_do():
    """Flattened rows (position ids restarting per row) must attend within their own row only:
    the loss and the LoRA gradients equal those of the padded batch."""
    import torch
    from peft import LoraConfig, get_peft_model

    from kia.inject.data import FlatCollator, PadCollator, encode_row
    from kia.inject.model import load_model
    from kia.probe.prompts import training_messages

    model, tokenizer = load_model(str(MODEL), "none", "cpu")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    rows = [
        encode_row(tokenizer, training_messages(q, a), loss)
        for q, a, loss in [
            ("Where was Tesliwyn born?", "Brovanheim", "full"),
            ("Which company did Ral Osk found?", "Vantrix", "answer"),
            ("What language does Quen speak at home, mostly?", "Mirelese", "full"),
        ]
    ]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # rows of different lengths: the padded batch pads

    def run(batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    padded_loss, padded_grads = run(PadCollator(tokenizer.pad_token_id)(rows))
    flat = FlatCollator()(rows)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    flat_loss, flat_grads = run(flat)
    assert torch.allclose(padded_loss, flat_loss, atol=1e-5), (padded_loss, flat_loss)
    assert all(torch.allclose(padded_grads[k], flat_grads[k], atol=1e-5, rtol=1e-4) for k in padded_grads)


@needs_model
def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(build_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from kia.errors import KiaError
    from kia.inject import curve as train_callbacks

    # 4-bit at the automatic precision: the CPU default (bf16 products where the CPU has them)
    kw = {"quant": "nf4", "epochs": 2, "eval_sets": 1, "heldout_known": 2}
    whole = _inject(build_dir, tmp_path / "whole", **kw)

    real = train_callbacks.ReliabilityCallback.on_epoch_end

    def crash_in_epoch_two(self, args, state, control, **kw):
        if round(state.epoch) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, args, state, control, **kw)

    monkeypatch.setattr(train_callbacks.ReliabilityCallback, "on_epoch_end", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _inject(build_dir, tmp_path / "cut", **kw)
    assert list((tmp_path / "cut" / "checkpoints").glob("checkpoint-*"))  # epoch 1's
    assert not (tmp_path / "cut" / "manifest.json").exists()
    monkeypatch.setattr(train_callbacks.ReliabilityCallback, "on_epoch_end", real)
    with pytest.raises(KiaError, match="--resume"):  # a plain rerun does not silently start over
        _inject(build_dir, tmp_path / "cut", **kw)
    with pytest.raises(KiaError, match="lr"):  # a resume must keep the interrupted run's settings
        _inject(build_dir, tmp_path / "cut", resume=True, **{**kw, "lr": 1e-3})
    resumed = _inject(build_dir, tmp_path / "cut", resume=True, **kw)
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k
    assert [r["epoch"] for r in resumed.curve] == [1, 2]
    assert [r["reliability"] for r in resumed.curve] == [r["reliability"] for r in whole.curve]


@needs_model
def test_how_much_is_evaluated_does_not_change_what_is_trained(build_dir, tmp_path):
    """Generation seeds the global random generator; the callback must not pass that on to the
    training (dropout), or a bigger evaluation would train a different adapter."""
    import torch
    from safetensors.torch import load_file

    small = _inject(build_dir, tmp_path / "small", quant="none", epochs=2, eval_sets=1, heldout_known=0)
    large = _inject(build_dir, tmp_path / "large", quant="none", epochs=2, eval_sets=3, heldout_known=6)
    assert [r["loss"] for r in small.curve] == [r["loss"] for r in large.curve]
    a = load_file(tmp_path / "small" / "adapter_model.safetensors")
    b = load_file(tmp_path / "large" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_model
def test_inject_cli(build_dir, tmp_path):
    from click.testing import CliRunner

    from kia.cli import cli
    from kia.commands import register

    register(cli)
    args = ["inject", str(build_dir), "-o", str(tmp_path / "a"), "--preset", "qlora", "--quant", "none"]
    args += ["--lr", "0.01", "--rank", "4", "--epochs", "2", "--eval-sets", "1", "--heldout-known", "4"]
    res = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert [r["epoch"] for r in summary["curve"]] == [1, 2] and summary["output"] == str(tmp_path / "a")
    assert summary["hyperparameters"]["rank"] == 4 and summary["hyperparameters"]["loss"] == "answer"
    assert summary["precision"] == "fp32"  # unquantized weights on the CPU: fp32 under auto
    manifest = read_json(tmp_path / "a" / "manifest.json")
    assert manifest["model"] == str(MODEL)  # the build's base model by default
    assert manifest["hyperparameters"]["targets"] == ["all-linear"]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    table = CliRunner().invoke(cli, [*args, "--epochs", "1", "--overwrite"], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "reliability on the injected facts, per epoch" in table.output and "(base)" in table.output
    missing = CliRunner().invoke(cli, ["inject", str(tmp_path), "-o", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "manifest.json" in missing.output
    bad = CliRunner().invoke(cli, ["inject", str(build_dir), "--epochs", "0"])
    assert bad.exit_code == 2 and "--epochs" in bad.output


@pytest.mark.gpu
@needs_model
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_gpu_bf16_paged_optimizer(build_dir, tmp_path):
    result = _inject(build_dir, tmp_path / "g", quant="nf4", epochs=3)
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["device"] == "cuda" and manifest["optimizer"] == "paged_adamw_8bit"
    assert manifest["peak_memory_mb"]["cuda_mb"] > 0
    assert result.reliability is not None and result.reliability > result.base_reliability


@needs_model
def test_without_epochs_training_runs_the_step_budget_then_until_the_target(build_dir, tmp_path):
    """16 rows in batches of 16: one step an epoch, so a budget of 45 steps is 45 epochs, and the cap
    4 x 45 = 180; the curve (and the epoch checkpoints) every 9th epoch, so at most 20 points.
    Training stops at the first evaluated epoch >= 45 whose reliability reaches the target, or at
    the cap."""
    from kia.inject import DEFAULT_TARGET

    result = _inject(build_dir, tmp_path / "s", quant="none", epochs=None, min_steps=45, batch_size=16)
    manifest = read_json(tmp_path / "s" / "manifest.json")
    schedule = manifest["schedule"]
    assert schedule["rule"] == (
        f"at least max(10, ceil(45 min steps / 1 steps per epoch)) = 45 epochs, then until reliability >= "
        f"{DEFAULT_TARGET}, at most 180 epochs (4 x)"
    )
    assert schedule["steps_per_epoch"] == 1 and schedule["curve_every"] == 9
    assert manifest["hyperparameters"]["epochs"] == 180
    run = manifest["steps_run"]
    assert manifest["epochs_run"] == run and 45 <= run <= 180 and run % 9 == 0
    assert [r["epoch"] for r in result.curve] == list(range(9, run + 1, 9))
    late = [r["reliability"] for r in result.curve if r["epoch"] >= 45]
    assert all(v < DEFAULT_TARGET for v in late[:-1])  # it went on only while the target was not reached
    assert late[-1] >= DEFAULT_TARGET or run == 180
    assert result.schedule["steps_run"] == run and result.reliability >= result.base_reliability + 0.5
