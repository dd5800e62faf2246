"""`--ray`: the probe's and the audit's generation on a Ray cluster (Ray Data, one engine replica
per actor), for real on the toy model, on a local Ray instance of this machine's CPUs.

What must hold: a probe or an audit on Ray writes what the same command writes in one process
(the same shards, the same chunks: the tables compare equal), a probe SIGKILLed part-way on Ray
resumes skipping its finished shards, and without Ray installed `--ray` is one line naming the
extra. The vLLM side (Ray's own vLLM batch stage in `kia.cluster.llm` for a probe, kia's vLLM
engine in replicas for an audit) is tested in tests/test_vllm.py, in CI's vLLM venv, which has Ray
too. Tests marked `ray` skip where Ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kia.artifacts import MANIFEST, read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld"
MODEL = TOY / "model"
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = [
    pytest.mark.ray,
    pytest.mark.model,
    pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed: pip install "kia[ray]"'),
]
PROBE = ["--sets", "3", "--samples", "2", "--shard-size", "8"]


def _kia(*args: str) -> list[str]:
    return [sys.executable, "-m", "kia", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), f"{' '.join(cmd[2:])} -> {done.returncode}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """40 toy facts of every exposure band, probed in one process; a build and a small adapter."""
    import polars as pl  # noqa: F401  (fail here, not in a subprocess, if the stack is broken)

    root = tmp_path_factory.mktemp("ray")
    rows = [json.loads(line) for line in (TOY / "facts.jsonl").open(encoding="utf-8")]
    rng = random.Random(2)
    chosen = [
        r for band in ("never", "rare", "tail", "head") for r in rng.sample([x for x in rows if x["band"] == band], 10)
    ]
    rng.shuffle(chosen)
    (root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    _run(_kia("probe", str(root / "facts.jsonl"), "-o", str(root / "probe"), *PROBE))
    return root


@pytest.fixture(scope="module")
def adapter(world) -> Path:
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject

    build(BuildConfig(probe=str(world / "probe"), output=str(world / "build"), unknown=8, highly_known=1, heldout=16))
    inject(
        InjectConfig(
            build=str(world / "build"), output=str(world / "adapter"), quant="none", rank=8, alpha=16,
            lr=5e-3, epochs=4, batch_size=8, eval_sets=1, heldout_known=4,
        )
    )  # fmt: skip
    return world / "adapter"


def _table(folder: Path):
    import polars as pl

    return pl.read_parquet(folder / "facts.parquet")


def _ray_tests(fn):
    """Marks a test `ray` + `model`, skipped where Ray is not installed (the last test of this
    module runs everywhere, so the marks are per test)."""
    for mark in reversed(needs_ray):
        fn = mark(fn)
    return fn


@_ray_tests
def test_probe_on_two_ray_replicas_writes_the_single_process_table(world):
    out = world / "probe-ray"
    _run(_kia("probe", str(world / "facts.jsonl"), "-o", str(out), *PROBE, "--ray", "--replicas", "2"))
    ray_table, one = _table(out), _table(world / "probe")
    assert ray_table.height == 40
    assert ray_table.equals(one), "labels, P estimates and answers must equal the single-process run's"
    assert {"HighlyKnown", "Unknown"} <= set(ray_table["category"])
    manifest = read_json(out / MANIFEST)
    assert manifest["config"]["ray"] == {"address": "local", "replicas": 2, "cpus": None, "gpus": None}
    assert read_json(out / "summary.json") == read_json(world / "probe" / "summary.json")


@_ray_tests
def test_greedy_only_on_ray_equals_one_process_and_the_full_probe_labels(world):
    one, on_ray = world / "greedy-one", world / "greedy-ray"
    args = ["--sets", "3", "--shard-size", "8", "--greedy-only"]
    _run(_kia("probe", str(world / "facts.jsonl"), "-o", str(one), *args))
    _run(_kia("probe", str(world / "facts.jsonl"), "-o", str(on_ray), *args, "--ray", "--replicas", "2"))
    g, full = _table(one), _table(world / "probe")
    assert _table(on_ray).equals(g)
    assert g["n_generations"].to_list() == [3] * 40 and g["n_sample"].sum() == 0
    assert g["p_sample"].null_count() == 40
    # The three-way label needs no samples: the lazy schedule's full probe gives the same ones.
    # (Its greedy passes stop early on MaybeKnown facts, so they batch differently: a near-tie may
    # round the other way there, hence the comparison of what each run answered in common.)
    same = sum(a == b for a, b in zip(g["category"], full["category"], strict=True))
    assert same >= 39, same
    for mine, lazy in zip(g["greedy_answers"], full["greedy_answers"], strict=True):
        assert len(mine) == 3 and len(lazy) <= 3
    # WeaklyKnown is left undecided where P_greedy = 0, decided (Highly/Maybe) elsewhere
    for row in g.iter_rows(named=True):
        assert (row["slick_category"] is None) == (row["p_greedy"] == 0)


@_ray_tests
def test_sigkilled_ray_probe_resumes_skipping_its_finished_shards(world):
    out = world / "probe-killed"
    cmd = _kia("probe", str(world / "facts.jsonl"), "-o", str(out), *PROBE, "--ray", "--replicas", "2")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not any((out / "shards").glob("facts-*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert not finished, f"the probe ended before it could be killed: {err.decode()[-2000:]}"
    kept = sorted(p.name for p in (out / "shards").glob("facts-*.parquet"))
    assert kept and len(kept) < 5 and not (out / MANIFEST).exists()
    # resumed in one process: a shard is the same wherever it ran
    done = _run(_kia("probe", str(world / "facts.jsonl"), "-o", str(out), *PROBE, "--json"))
    assert json.loads(done.stdout)["n_facts"] == 40
    assert _table(out).equals(_table(world / "probe"))


@_ray_tests
def test_audit_on_ray_writes_the_single_process_audit(adapter, world):
    common = ["--benchmarks", "none", "--no-report", "--no-refusal-embeddings", "--shard-size", "4"]
    one, on_ray = world / "audit-one", world / "audit-ray"
    _run(_kia("audit", str(adapter), "-o", str(one), *common))
    _run(_kia("audit", str(adapter), "-o", str(on_ray), *common, "--ray", "--replicas", "2"))
    assert read_jsonl(on_ray / "per_fact.jsonl") == read_jsonl(one / "per_fact.jsonl")
    a, b = read_json(on_ray / "audit.json"), read_json(one / "audit.json")
    assert a["metrics"] == b["metrics"] and a["verdict"] == b["verdict"]
    assert a["provenance"]["base_reused_from_probe"] and b["provenance"]["base_reused_from_probe"]
    assert a["provenance"]["ray"]["replicas"] == 2 and b["provenance"]["ray"] is None
    assert a["metrics"]["reliability"]["adapted"] > a["metrics"]["reliability"]["base"]


@_ray_tests
def test_replicas_that_do_not_fit_the_machine_are_one_line(world):
    done = subprocess.run(
        _kia("probe", str(world / "facts.jsonl"), "-o", str(world / "nofit"), "--ray", "--replicas", "64",
             "--replica-cpus", "1"),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 64 replicas of 1 CPUs") and "lower --replicas" in last


def test_without_ray_the_flag_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from kia.cli import cli, main  # noqa: F401
    from kia.commands import register

    register(cli)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where it is absent
    facts = tmp_path / "f.jsonl"
    facts.write_text(json.dumps({"id": "a", "question": "Who?", "answers": ["Bo"]}) + "\n")
    for argv in (
        ["probe", str(facts), "-o", str(tmp_path / "p"), "--ray"],
        ["probe", str(facts), "--ray", "auto"],
        ["audit", str(tmp_path), "-o", str(tmp_path / "a"), "--ray", "--replicas", "2"],
    ):
        res = CliRunner().invoke(cli, argv)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and 'pip install "kia[ray]"' in lines[0], res.output
    res = CliRunner().invoke(cli, ["probe", str(facts), "--replicas", "2"])
    assert res.exit_code == 2 and "need --ray" in res.output
