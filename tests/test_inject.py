"""Tier 2: kia inject trains real (Q)LoRA adapters on the toy model, on the CPU; tier 3: the GPU path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kia.artifacts import read_json, sha256_tree, write_json
from kia.engines import default_model

MODEL = Path(default_model())
pytestmark = pytest.mark.model
needs_model = pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="toy model missing: kia toyworld build")


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
    from kia.train import InjectConfig, inject

    defaults = {"preset": "paper", "lr": 2e-2, "epochs": 6, "batch_size": 4, "eval_sets": 2, "heldout_known": 8}
    return inject(InjectConfig(build=str(build_dir), output=str(out), **{**defaults, **kw}))


@needs_model
@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_training_raises_reliability_and_leaves_the_base_alone(build_dir, tmp_path, quant):
    from safetensors.torch import load_file

    before = sha256_tree(MODEL)
    result = _inject(build_dir, tmp_path / "a", quant=quant)
    assert result.base_reliability is not None and result.reliability is not None
    assert result.reliability >= result.base_reliability + 0.3, result.curve
    assert len(result.curve) == 6 and all(r["heldout_known_reliability"] is not None for r in result.curve)
    out = tmp_path / "a"
    assert {p.name for p in out.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json", "train_log.jsonl"}
    assert not list(out.glob("*.bin")) and not (out / "checkpoints").exists()
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero
    assert sha256_tree(MODEL) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "inject" and manifest["base_model"]["sha256"] == before
    assert manifest["hyperparameters"]["rank"] == 1 and manifest["tokens_per_second"] > 0


@needs_model
def test_saved_adapter_reloads_with_the_same_answers(build_dir, tmp_path):
    from kia.engines import EngineConfig, load_engine
    from kia.probe import greedy_reliability
    from kia.train_callbacks import load_eval_facts

    result = _inject(build_dir, tmp_path / "a", quant="none", epochs=4)
    injected, _, sets = load_eval_facts(build_dir, 0, 0)
    engine = load_engine(EngineConfig(model=str(MODEL), adapter=str(tmp_path / "a")))
    scores = greedy_reliability(engine, injected, sets, n_sets=2, adapter=True)
    assert sum(scores) / len(scores) == pytest.approx(result.reliability)
    base = greedy_reliability(engine, injected, sets, n_sets=2, adapter=False)
    assert sum(base) / len(base) == pytest.approx(result.base_reliability)


@needs_model
def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(build_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from kia import train_callbacks

    _inject(build_dir, tmp_path / "whole", quant="none", epochs=2, eval_sets=1)

    real = train_callbacks.ReliabilityCallback.on_epoch_end

    def crash_in_epoch_two(self, args, state, control, **kw):
        if round(state.epoch) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, args, state, control, **kw)

    monkeypatch.setattr(train_callbacks.ReliabilityCallback, "on_epoch_end", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _inject(build_dir, tmp_path / "cut", quant="none", epochs=2, eval_sets=1)
    assert (tmp_path / "cut" / "checkpoints").exists() and not (tmp_path / "cut" / "manifest.json").exists()
    monkeypatch.setattr(train_callbacks.ReliabilityCallback, "on_epoch_end", real)
    _inject(build_dir, tmp_path / "cut", quant="none", epochs=2, eval_sets=1, resume=True)
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k


@needs_model
def test_inject_cli(build_dir, tmp_path):
    from click.testing import CliRunner

    from kia.cli import cli
    from kia.commands import register

    register(cli)
    args = ["inject", str(build_dir), "-o", str(tmp_path / "a"), "--preset", "paper", "--quant", "none"]
    args += ["--lr", "0.02", "--epochs", "2", "--eval-sets", "1", "--json"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert len(summary["curve"]) == 2 and summary["output"] == str(tmp_path / "a")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    missing = CliRunner().invoke(cli, ["inject", str(tmp_path), "-o", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "manifest.json" in missing.output


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_gpu_bf16_paged_optimizer(build_dir, tmp_path):
    result = _inject(build_dir, tmp_path / "g", quant="nf4", epochs=2)
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["device"] == "cuda" and manifest["optimizer"] == "paged_adamw_8bit"
    assert manifest["peak_memory_mb"]["cuda_mb"] > 0 and result.reliability is not None
