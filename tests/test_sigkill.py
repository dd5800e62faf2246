"""Tier 2: a probe or a training run SIGKILLed part-way loses nothing (issue 7).

Each test starts the real command in a subprocess, waits until it has written some durable work
(a probe shard, an epoch checkpoint), waits a seeded random moment more, kills it with SIGKILL
(no cleanup handler runs), then reruns the same command and compares the result with an
uninterrupted run. The audit's kill test lives in tests/test_audit_model.py (it reuses that
module's adapter).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kia.artifacts import MANIFEST

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "datasets" / "toyworld" / "model"


def _kia(*args: str) -> list[str]:
    return [sys.executable, "-m", "kia", *args]


def _kill_when(
    cmd: list[str], ready, seed: int, delay: tuple[float, float] = (0, 2), timeout: float = 300, env=None
) -> None:
    """Run `cmd`, SIGKILL it a random `delay` seconds after `ready()` turns true; fail if it finished first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(random.Random(seed).uniform(*delay))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert not finished, f"the command ended before it could be killed: {err.decode()[-2000:]}"


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="no toy model")
def test_sigkilled_probe_resumes_to_the_same_table(tmp_path):
    import polars as pl

    sys.path.insert(0, str(Path(__file__).parent))
    from test_probe_model import _sample

    # enough shards that the kill, up to 2 s after the first one, lands before the last
    facts = _sample(tmp_path, per_band=16)
    args = ["--sets", "4", "--samples", "4", "--shard-size", "8"]
    _run(_kia("probe", str(facts), "-o", str(tmp_path / "ref"), *args))
    run = tmp_path / "run"
    _kill_when(_kia("probe", str(facts), "-o", str(run), *args), lambda: any((run / "shards").glob("*.parquet")), 0)
    assert not (run / MANIFEST).exists()
    _run(_kia("probe", str(facts), "-o", str(run), *args))
    assert pl.read_parquet(run / "facts.parquet").equals(pl.read_parquet(tmp_path / "ref" / "facts.parquet"))


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="no toy model")
def test_sigkilled_training_resumes_to_the_same_adapter(tmp_path):
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    from test_build import make_probe_dir

    from kia.artifacts import read_json, write_json
    from kia.build import BuildConfig, build

    probe = make_probe_dir(tmp_path / "probe", per_relation=30, facts_file=MODEL.parent / "facts.jsonl")
    manifest = read_json(probe / "manifest.json")
    manifest["model"] = {"id": str(MODEL)}
    write_json(probe / "manifest.json", manifest)
    build(BuildConfig(probe=str(probe), output=str(tmp_path / "build"), unknown=8, highly_known=1, heldout=24))
    args = ["--preset", "paper", "--quant", "none", "--lr", "0.03", "--epochs", "4", "--batch-size", "4"]
    args += ["--eval-sets", "1", "--heldout-known", "2"]
    _run(_kia("inject", str(tmp_path / "build"), "-o", str(tmp_path / "whole"), *args))
    cut = tmp_path / "cut"
    _kill_when(
        _kia("inject", str(tmp_path / "build"), "-o", str(cut), *args),
        lambda: any((cut / "checkpoints").glob("checkpoint-*/trainer_state.json")),
        1,
    )
    assert not (cut / MANIFEST).exists()
    # a kill while the Trainer saves leaves a newer, partial checkpoint (CI hit one): make sure of one
    partial = cut / "checkpoints" / "checkpoint-999"
    partial.mkdir(exist_ok=True)
    (partial / "trainer_state.json").write_text('{"global_st', encoding="utf-8")
    _run(_kia("inject", str(tmp_path / "build"), "-o", str(cut), *args, "--resume"))
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(cut / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k


def test_sigkilled_build_reruns_to_the_same_files(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_build import make_probe_dir

    probe = make_probe_dir(tmp_path / "probe")
    args = ["--unknown", "40", "--highly-known", "1", "--paraphrases", "3"]
    _run(_kia("build", str(probe), "-o", str(tmp_path / "ref"), *args))
    out = tmp_path / "out"
    _kill_when(_kia("build", str(probe), "-o", str(out), *args), lambda: out.exists(), 2)
    assert not (out / MANIFEST).exists()
    _run(_kia("build", str(probe), "-o", str(out), *args))
    for name in ("train.jsonl", "eval_injected.jsonl", "eval_paraphrase.jsonl", "eval_heldout.jsonl", "bias.json"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
