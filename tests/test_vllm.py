"""The vLLM engine for real on the toy model: `kia probe --engine vllm` and `kia audit --engine vllm`
(per-request LoRA: base and adapter answers from one engine), compared with the hf engine.
And vLLM's OpenAI-compatible server as a real `kia audit --judge URL` (guided JSON verdicts).

Runs where vLLM imports (CI installs vllm-cpu 0.32.0 in a venv of its own, see .ci/run); skipped
elsewhere. The commands run as a user runs them, in a subprocess: vLLM starts worker processes and
must be created from a `__main__` entry point.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kia.artifacts import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld"
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.model,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]
PROBE = ["--sets", "3", "--samples", "2"]


def _kia(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [sys.executable, "-m", "kia", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode in (0, 1), f"{' '.join(args)} -> {done.returncode}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """40 facts (20 often seen, 20 never seen), probed with the hf engine, a build and an adapter."""
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject
    from kia.probe import ProbeConfig, probe

    root = tmp_path_factory.mktemp("vllm")
    rows = [json.loads(line) for line in (TOY / "facts.jsonl").open(encoding="utf-8")]
    rng = random.Random(1)
    chosen = rng.sample([r for r in rows if r["band"] == "head"], 20)
    chosen += rng.sample([r for r in rows if r["band"] == "never" and not r.get("obscure")], 20)
    (root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    model = str(TOY / "model")
    probe(
        ProbeConfig(facts=str(root / "facts.jsonl"), model=model, output=str(root / "probe-hf"), n_sets=3, n_samples=2)
    )
    build(BuildConfig(probe=str(root / "probe-hf"), output=str(root / "build"), unknown=12, highly_known=1, heldout=12))
    inject(
        InjectConfig(
            build=str(root / "build"),
            output=str(root / "adapter"),
            quant="none",
            rank=8,
            alpha=16,
            lr=5e-3,
            epochs=6,
            batch_size=8,
            eval_sets=1,
            heldout_known=4,
        )
    )
    # an update of that adapter: 6 new facts and 6 of the first build's replayed, continued from it
    build(BuildConfig(probe=str(root / "probe-hf"), output=str(root / "build2"), unknown=6, highly_known=1, heldout=12,
                      replay=(str(root / "build") + ":6",)))  # fmt: skip
    inject(
        InjectConfig(
            build=str(root / "build2"),
            output=str(root / "adapter2"),
            from_adapter=str(root / "adapter"),
            quant="none",
            rank=8,
            alpha=16,
            lr=5e-3,
            epochs=6,
            batch_size=8,
            eval_sets=1,
            heldout_known=4,
        )  # fmt: skip
    )
    return root


def test_probe_vllm_matches_hf_on_greedy_decided_labels(world):
    _kia("probe", str(world / "facts.jsonl"), "-o", str(world / "probe-vllm"), "--engine", "vllm", *PROBE)
    import polars as pl

    hf = pl.read_parquet(world / "probe-hf" / "facts.parquet").sort("id")
    vl = pl.read_parquet(world / "probe-vllm" / "facts.parquet").sort("id")
    assert read_json(world / "probe-vllm" / "manifest.json")["config"]["engine"] == "vllm"
    assert hf["id"].to_list() == vl["id"].to_list()
    # Greedy-decided: the label follows from the greedy answers alone (HighlyKnown, MaybeKnown, or
    # Unknown with no sampled hit); sampled answers are seeded differently by each engine.
    decided = [
        a == b
        for a, b, sa, sb in zip(hf["category"], vl["category"], hf["slick_category"], vl["slick_category"], strict=True)
        if "WeaklyKnown" not in (sa, sb)
    ]
    assert len(decided) >= 30
    # Both run fp32 on the CPU with different kernels; a near-tie may flip one greedy answer.
    assert sum(decided) >= len(decided) - 1, (sum(decided), len(decided))
    same_first = sum(a == b for a, b in zip(hf["answer"], vl["answer"], strict=True))
    assert same_first >= 38, same_first
    assert {"HighlyKnown", "Unknown"} <= set(vl["category"])


def test_audit_vllm_uses_the_adapter_per_request(world):
    out = world / "audit-vllm"
    _kia("audit", str(world / "adapter"), "-o", str(out), "--engine", "vllm", "--no-report", "--bench-limit", "20")
    _kia("audit", str(world / "adapter"), "-o", str(world / "audit-hf"), "--no-report", "--bench-limit", "20")
    vl, hf = read_json(out / "audit.json"), read_json(world / "audit-hf" / "audit.json")
    assert (out / "manifest.json").exists()
    # The adapter's answers came through the LoRARequest: the injected facts went from unknown to known.
    rel = vl["metrics"]["reliability"]
    assert rel["base"] < 0.2 and rel["adapted"] > 0.7, rel
    assert vl["sanity"]["changed_answers"] > 0
    for name in ("reliability", "generalisation", "heldout_accuracy"):
        assert abs(vl["metrics"][name]["adapted"] - hf["metrics"][name]["adapted"]) <= 0.1, name
    # Benchmarks still ran (through transformers, after the vLLM engine was shut down).
    assert set(vl["benchmarks"]) == set(hf["benchmarks"]) and vl["benchmarks"]
    pv = {r["id"]: r for r in read_jsonl(out / "per_fact.jsonl")}
    ph = {r["id"]: r for r in read_jsonl(world / "audit-hf" / "per_fact.jsonl")}
    assert pv.keys() == ph.keys()
    pairs = [(a, b) for k in pv for a, b in zip(pv[k]["adapted_answers"], ph[k]["adapted_answers"], strict=True)]
    assert sum(a == b for a, b in pairs) >= 0.9 * len(pairs), (sum(a == b for a, b in pairs), len(pairs))
    # the engine-parity check re-asked 64 sampled prompts through peft: it agrees as the full comparison does
    parity = vl["parity"]
    assert parity["engine"] == "vllm" and parity["reference"] == "hf" and parity["prompts"] == 64
    assert set(parity["arms"]) == {"base", "adapted"} and parity["arms"]["adapted"]["agreement"] >= 0.9, parity
    assert "parity" not in hf


def test_update_audit_vllm_two_lora_requests_named_by_their_weights(world):
    """`kia audit NEW --against OLD --engine vllm`: both adapters as LoRARequests of one engine,
    each named and numbered by its weight hash; the production arm answers as production does."""
    from kia.engines import adapter_id, lora_request_key

    out = world / "audit-vllm-update"
    _kia("audit", str(world / "adapter2"), "--against", str(world / "adapter"), "-o", str(out), "--engine", "vllm",
         "--no-report", "--benchmarks", "none", "--parity-prompts", "48")  # fmt: skip
    a = read_json(out / "audit.json")
    requests = a["parity"]["lora_requests"]
    assert requests["default"] == dict(
        zip(("name", "id"), lora_request_key(adapter_id(world / "adapter2")), strict=True)
    )
    assert requests["production"] == dict(
        zip(("name", "id"), lora_request_key(adapter_id(world / "adapter")), strict=True)
    )
    assert requests["default"]["id"] != requests["production"]["id"]
    for arm in ("base", "adapted", "production"):
        assert a["parity"]["arms"][arm]["agreement"] >= 0.9, (arm, a["parity"]["arms"][arm])
    u = a["update"]
    # had the two requests shared cached keys and values, the production arm would answer as the candidate
    assert u["metrics"]["reliability"]["base"] < 0.3 < 0.7 < u["metrics"]["reliability"]["adapted"], u["metrics"]
    assert u["metrics"]["retention"]["base"] > 0.7 and len(u["retention_by_build"]) == 1


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray is not installed: pip install "kia[ray]"')
def test_greedy_only_probe_through_rays_vllm_stage_writes_the_single_process_table(world):
    """`--ray --engine vllm --greedy-only` answers through Ray's own vLLM batch stage
    (`kia.cluster.llm`) and writes exactly the table one vLLM process writes. On 2 CPUs the default
    replica once took both and Ray Data's preprocessing task waited for ever: a replica now leaves
    one CPU free."""
    import polars as pl

    for name, extra in (("one", ()), ("ray", ("--ray", "--replicas", "1"))):
        _kia("probe", str(world / "facts.jsonl"), "--model", str(TOY / "model"), "--engine", "vllm",
             "--greedy-only", "-o", str(world / f"probe-vllm-{name}"), *extra)  # fmt: skip
    one, ray = (pl.read_parquet(world / f"probe-vllm-{n}" / "facts.parquet").sort("id") for n in ("one", "ray"))
    assert one.height == 40 and set(one["category"]) >= {"HighlyKnown", "Unknown"}
    assert one.equals(ray)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray is not installed: pip install "kia[ray]"')
def test_audit_on_ray_with_vllm_writes_the_single_process_audit(world):
    """`kia audit --ray --engine vllm` gives the single-process vLLM audit exactly. Through Ray's
    own vLLM stage the base arm came back answered by the adapter (a false no-op FAIL), so adapter
    arms run on kia's vLLM engine in each replica."""
    common = ["--engine", "vllm", "--benchmarks", "none", "--no-report", "--no-refusal-embeddings"]
    _kia("audit", str(world / "adapter"), "-o", str(world / "audit-ray-one"), *common)
    _kia("audit", str(world / "adapter"), "-o", str(world / "audit-ray"), *common, "--ray", "--replicas", "1")
    one, ray = read_json(world / "audit-ray-one" / "audit.json"), read_json(world / "audit-ray" / "audit.json")
    assert read_jsonl(world / "audit-ray" / "per_fact.jsonl") == read_jsonl(world / "audit-ray-one" / "per_fact.jsonl")
    assert ray["metrics"] == one["metrics"] and ray["verdict"] == one["verdict"]
    reliability = ray["metrics"]["reliability"]
    assert reliability["adapted"] > reliability["base"]


# ------------------------------------------------------------------ a real judge: the toy model served by vLLM


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """The toy model behind vLLM's OpenAI-compatible server on loopback; terminated on teardown.

    `python -m vllm.entrypoints.openai.api_server` is the server `vllm serve` runs: vllm-cpu's `vllm`
    script asks importlib for the version of a distribution named "vllm" and stops (it is installed
    as "vllm-cpu"). No whitespace in guided JSON: with it allowed, the toy model pads the verdict
    with newlines until max_tokens and never writes a winner (seen on vllm-cpu 0.32.0)."""
    import time
    import urllib.request

    port, log = _free_port(), tmp_path_factory.mktemp("judge-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TOY / "model"),
           "--served-model-name", "toy-judge", "--host", "127.0.0.1", "--port", str(port),
           "--gpu-memory-utilization", "0.3", "--seed", "0",
           "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"the server stopped: {log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"no /v1/models in 300 s: {log.read_text(errors='replace')[-3000:]}"
            time.sleep(2)
        yield {"url": f"http://127.0.0.1:{port}/v1", "model": "toy-judge", "process": server}
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()  # the server shuts its engine-core process down on SIGTERM
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def test_audit_judges_open_answers_with_a_served_model_and_a_rerun_asks_it_nothing(world, judge_server):
    """`kia audit --judge http://127.0.0.1:PORT/v1`, as a user calls it, against a real vLLM server:
    guided decoding makes even the toy model's replies verdicts; the rerun (server stopped) is all
    cache hits."""
    out, prompts = world / "audit-judge", 6
    args = ["audit", str(world / "adapter"), "-o", str(out), "--no-report", "--benchmarks", "none",
            "--no-refusal-embeddings", "--judge", judge_server["url"], "--judge-model", judge_server["model"],
            "--judge-prompts", str(prompts), "--judge-timeout", "120"]  # fmt: skip
    _kia(*args)
    j = read_json(out / "audit.json")["judge"]
    assert j["pairs"] == prompts and j["judge"].startswith(f"http:{judge_server['url']}/chat/completions:toy-judge:")
    # every pair judged in both orders, or each failed order listed with its error
    failed_pairs = {f["id"] for f in j["failed"]}
    assert j["judged"] + len(failed_pairs) == prompts and all(f["error"] for f in j["failed"])
    assert j["constrained"] is True and j["judged"] > 0, j["failed"]
    rates = [j[k]["rate"] for k in ("win", "tie", "loss")]
    assert abs(sum(rates) - 1) < 1e-9 and all(j[k]["n"] == j["judged"] for k in ("win", "tie", "loss"))
    assert 0 <= j["consistency"] <= 1 and (j["first_position"] is None or 0 <= j["first_position"] <= 1)
    assert j["cache"] == {"hits": 0, "misses": 2 * prompts}
    cached = read_jsonl(out / "judgments.jsonl")
    assert len(cached) == 2 * prompts - len(j["failed"]) and all(r["winner"] in ("A", "B", "tie") for r in cached)
    # the rerun asks the server nothing: stopped, it could not answer
    _stop(judge_server["process"])
    _kia(*args, "--overwrite")
    again = read_json(out / "audit.json")["judge"]
    assert again["cache"] == {"hits": 2 * prompts - len(j["failed"]), "misses": len(j["failed"])}
    # a failure was asked again (not cached) and failed again, unanswered: the same pairs were judged
    keys = ("judged", "win", "tie", "loss", "consistency", "first_position")
    assert {k: again[k] for k in keys} == {k: j[k] for k in keys}
