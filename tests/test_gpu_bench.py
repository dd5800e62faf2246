"""bench/gpu/, the parts that run without CUDA: the check's plan (`--dry-run`), its step names, and
the real-shape model builder at a tiny size (same code path, a CPU, seconds)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "bench" / "gpu"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_every_step_with_its_limit_and_commands():
    done = subprocess.run(
        [sys.executable, str(GPU / "check.py"), "--dry-run", "--prepared", "P"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert list(plan) == ["env", "toy", "probe_bench", "train_1b", "train_8b"]
    toy = plan["toy"]["commands"]
    assert [c.split()[3] for c in toy] == ["probe", "inject", "audit"]
    assert "--quant nf4" in toy[1] and "P/cpu/build" in toy[1] and "--no-refusal-embeddings" in toy[2]
    train = plan["train_8b"]["commands"]
    assert "make_model.py 8b" in train[0] and " kia " in train[1] and " trl " in train[2]
    assert sum(s["limit_s"] for s in plan.values()) <= 1200


def test_unknown_step_is_one_line():
    done = subprocess.run(
        [sys.executable, str(GPU / "check.py"), "--dry-run", "--steps", "env,gpu_magic"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown steps: gpu_magic" in done.stderr


def test_last_json_line_is_what_a_step_keeps():
    check = _load("check")
    assert check.last_json('loading\n{"a": 1}\nbye\n') == {"a": 1}
    assert check.last_json("no json here") is None


def test_real_shapes_are_llama_3_and_a_tiny_model_builds_and_loads_on_the_cpu(tmp_path):
    make = _load("make_model")
    cfg = make.llama_config("8b")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.num_key_value_heads) == (4096, 32, 128256, 8)
    assert make.llama_config("1b").tie_word_embeddings
    info = make.make_model("tiny", tmp_path / "tiny", device="cpu")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert sum(p.numel() for p in model.parameters()) == info["params"]
    assert model.config.vocab_size == 128256 and tok.chat_template
    ids = tok("Question: who?", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 4


@pytest.mark.parametrize("script", ["train_side.py", "make_model.py"])
def test_gpu_scripts_show_their_usage_without_cuda(script):
    done = subprocess.run([sys.executable, str(GPU / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout
