"""Tier 2: a real two-point `kia sweep` on the toy model (CPU): probe, build, train and audit with
the toy lm-eval tasks, SIGKILLed between its points and resumed.

Checked on that one sweep: the finished point is skipped on the rerun and left as it was; every
point is measured on the same held-out facts; the audit that shared the base model, its cached
answers and its base benchmark scores wrote the same audit.json figures as a plain `kia audit` of
the same adapter; the table, the JSON and capacity.html (in headless Chromium when installed) are
written, manifest.json last.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toyfacts import sample_toy_facts

from kia.artifacts import MANIFEST, read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld"
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not (TOY / "model" / "config.json").exists(), reason="no toy model"),
]
POINTS = ("n3-k1-p0-s0", "n6-k1-p0-s0")


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str, list[str]]:
    from kia.probe import ProbeConfig, probe

    root = tmp_path_factory.mktemp("sweep_model")
    probe(ProbeConfig(facts=str(sample_toy_facts(root / "facts.jsonl", 1, head=16, never=16, obscure=4)), model=str(TOY / "model"), output=str(root / "probe"),
                      n_sets=2, n_samples=1))  # fmt: skip
    out = root / "sweep"
    cmd = [sys.executable, "-m", "kia", "sweep", str(root / "probe"), "--unknown", "3,6", "--recipe", "K=1,P=0",
           "--seeds", "0", "--heldout", "12", "--preset", "paper", "--quant", "none", "--lr", "0.03", "--epochs", "3",
           "--batch-size", "4", "--bench-limit", "10", "-o", str(out)]  # fmt: skip
    first = out / "points" / POINTS[0] / MANIFEST
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert first.exists() and not finished, err.decode()[-3000:]
    assert not (out / "points" / POINTS[1] / MANIFEST).exists() and not (out / MANIFEST).exists()
    before = first.read_bytes()
    done = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert first.read_bytes() == before  # the finished point was skipped, not redone
    return out, done.stdout, done.stderr.splitlines()


def test_the_rerun_skips_the_finished_point_and_runs_the_other(swept):
    out, stdout, lines = swept
    # a point's line starts "[i/n]"; other libraries log lines that start with "[" too
    progress = [line for line in lines if re.match(r"\[\d+/\d+\] ", line)]
    assert len(progress) == 2 and "(finished earlier)" in progress[0] and "(finished earlier)" not in progress[1]
    assert all(("PASS" in line) != ("FAIL" in line) for line in progress)  # one verdict per point line
    summary = json.loads(stdout)
    assert summary["skipped"] == 1 and [r["point"] for r in summary["rows"]] == list(POINTS)
    assert (out / MANIFEST).exists() and read_json(out / MANIFEST)["stage"] == "sweep"


def test_every_point_is_measured_on_the_one_heldout_set(swept):
    out, _, _ = swept
    ids = read_json(out / "heldout.json")["ids"]
    files = [(out / "points" / p / "build" / "eval_heldout.jsonl").read_bytes() for p in POINTS]
    assert len(ids) == 12 and files[0] == files[1]
    assert sorted(r["id"] for r in read_jsonl(out / "points" / POINTS[0] / "build" / "eval_heldout.jsonl")) == sorted(
        ids
    )
    for p in POINTS:
        trained = {r["fact_id"] for r in read_jsonl(out / "points" / p / "build" / "train.jsonl")}
        assert not trained & set(ids)
    injected = [{r["id"] for r in read_jsonl(out / "points" / p / "build" / "eval_injected.jsonl")} for p in POINTS]
    assert len(injected[0]) == 3 and len(injected[1]) == 6 and injected[0] < injected[1]  # the picks nest


def test_the_table_and_its_figures(swept):
    import polars as pl

    out, _, _ = swept
    table = pl.read_parquet(out / "sweep.parquet")
    assert table["n"].to_list() == [3, 6] and table["recipe"].to_list() == ["K=1,P=0"] * 2
    for column in ("reliability", "generalisation", "positive_shift", "negative_shift", "refusal_rate",
                   "distinct_answers", "exploded_answers", "bench_toy_mc_delta", "bench_toy_mc_ci_low",
                   "bench_toy_arith_ci_high", "verdict", "seconds", "steps", "epochs"):  # fmt: skip
        assert column in table.columns, column
    assert table["epochs"].to_list() == [3, 3] and table["train_rows"].to_list() == [6, 12]
    assert all(0 <= v <= 1 for v in table["reliability"].to_list())
    data = read_json(out / "sweep.json")
    assert data["rows"] == json.loads(table.write_json())  # the two outputs hold the same rows
    assert data["recommendation"]["text"] and len(data["findings"]) == 5
    inject = read_json(out / "points" / POINTS[1] / "adapter" / MANIFEST)
    assert inject["schedule"]["epochs"] == 3 and inject["steps_run"] == 9  # 12 rows, batch 4, 3 epochs


def test_a_shared_audit_writes_what_a_plain_audit_of_the_adapter_writes(swept, tmp_path):
    from kia.audit import AuditConfig, audit

    out, _, _ = swept
    shared = read_json(out / "sweep.json")["shared"]
    # the second point's audit did share: the held-out arm's calls and the benchmarks' base arm
    assert shared["base_arm_prompts_from_cache"] > 0 and shared["base_benchmark_reused"] >= 1
    point = out / "points" / POINTS[1]
    audit(AuditConfig(adapter=str(point / "adapter"), output=str(tmp_path / "plain"), bench_limit=10, report=False))
    a, b = read_json(point / "audit" / "audit.json"), read_json(tmp_path / "plain" / "audit.json")
    for key in ("verdict", "reasons", "metrics", "shift", "collapse", "refusals", "benchmarks", "sanity"):
        assert a[key] == b[key], key
    assert read_jsonl(point / "audit" / "per_fact.jsonl") == read_jsonl(tmp_path / "plain" / "per_fact.jsonl")


def test_the_capacity_page_opens_in_chromium_and_requests_nothing(swept, tmp_path):
    out, _, _ = swept
    html = (out / "capacity.html").read_text(encoding="utf-8")
    assert "How many facts fit in this adapter?" in html and html.count("<svg ") >= 8 and "<script" not in html
    sys.path.insert(0, str(Path(__file__).parent))
    import test_report as tr

    if tr.CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    dom, requests = tr._load(tmp_path, out / "capacity.html")
    assert "<title>kia sweep: how many facts fit in this adapter</title>" in dom and requests == []


def test_skip_unfit_runs_what_fits_and_names_the_rest(swept, tmp_path):
    """The grid grown by an N the probe cannot fill: an error naming it, or with --skip-unfit the
    finished points re-read (nothing retrained) and N = 1000 listed as not run."""
    import shutil

    out, _, _ = swept
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    cmd = [sys.executable, "-m", "kia", "sweep", str(out.parent / "probe"), "--unknown", "3,6,1000", "--recipe",
           "K=1,P=0", "--seeds", "0", "--heldout", "12", "--preset", "paper", "--quant", "none", "--lr", "0.03",
           "--epochs", "3", "--batch-size", "4", "--bench-limit", "10", "-o", str(copy)]  # fmt: skip
    refused = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "--unknown 1000" in refused.stderr and "--skip-unfit" in refused.stderr
    done = subprocess.run([*cmd, "--skip-unfit", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["skipped"] == 2 and [r["point"] for r in summary["rows"]] == list(POINTS)
    unfit = read_json(copy / "sweep.json")["unfit"]
    assert [(u["n"], u["recipe"]) for u in unfit] == [(1000, "K=1,P=0")] and "--unknown 1000" in unfit[0]["reason"]
    assert "not run (--skip-unfit): N=1000" in done.stderr
    assert "N = 1,000 with K=1,P=0: --unknown 1000" in (copy / "capacity.html").read_text(encoding="utf-8")
