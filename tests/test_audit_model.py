"""Tier 2: `kia audit` for real on the toy model (CPU): probe a small fact set, build, train a small
adapter, audit it with the toy lm-eval tasks, and check audit.json end to end.

Set KIA_TEST_TOYWORLD to a folder holding facts.jsonl, model/ and tasks/ to run against another
toy world (default: datasets/toyworld).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from toyfacts import sample_toy_facts

from kia.artifacts import read_json, read_jsonl, write_json

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(os.environ.get("KIA_TEST_TOYWORLD", ROOT / "datasets" / "toyworld"))
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not (TOY / "model" / "config.json").exists(), reason=f"no toy model at {TOY}/model"),
]

METRIC_KEYS = {"base", "adapted", "delta", "ci_low", "ci_high", "p_value", "n", "higher_is_better", "description"}
METRICS = {
    "reliability",
    "reliability_full",
    "generalisation",
    "positive_shift",
    "negative_shift",
    "refusal_rate",
    "distinct_answers",
    "answer_entropy",
    "exploded_answers",
    "target_answer_share",
}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject
    from kia.probe import ProbeConfig, probe

    root = tmp_path_factory.mktemp("audit_model")
    # 60 facts: often seen (mostly HighlyKnown), never seen (Unknown), obscure (refused)
    facts = sample_toy_facts(root / "facts.jsonl", 0, head=30, never=24, obscure=6)
    model = str(TOY / "model")
    probe(ProbeConfig(facts=str(facts), model=model, output=str(root / "probe"), n_sets=3, n_samples=1))
    summary = read_json(root / "probe" / "summary.json")["counts"]
    assert summary["Unknown"] >= 20 and summary["HighlyKnown"] >= 20, summary
    build(BuildConfig(probe=str(root / "probe"), output=str(root / "build"), unknown=20, highly_known=1, heldout=20))
    inject(
        InjectConfig(
            build=str(root / "build"),
            output=str(root / "adapter"),
            preset="qlora",
            quant="none",
            rank=8,
            alpha=16,
            lr=5e-3,
            epochs=6,
            batch_size=8,
            eval_sets=1,
            heldout_known=5,
        )
    )
    return root / "adapter"


@pytest.fixture(scope="module")
def audited(adapter_dir) -> Path:
    from kia.audit import AuditConfig, audit

    out = adapter_dir.parent / "audit"
    config = AuditConfig(
        adapter=str(adapter_dir), output=str(out), bench_limit=40, n_boot=500, report=False, judge="facts"
    )
    result = audit(config)
    assert result.verdict in ("PASS", "FAIL")
    return out


def test_audit_json_has_every_key(audited):
    a = read_json(audited / "audit.json")
    assert {
        "verdict",
        "reasons",
        "metrics",
        "shift",
        "collapse",
        "refusals",
        "benchmarks",
        "sanity",
        "curve",
        "examples",
        "provenance",
    } <= set(a)
    assert a["verdict"] in ("PASS", "FAIL") and isinstance(a["reasons"], list)
    assert METRICS <= set(a["metrics"])
    for name, m in a["metrics"].items():
        assert METRIC_KEYS <= set(m), name
    shift = a["shift"]
    assert shift["categories"] == ["Unknown", "MaybeKnown", "HighlyKnown"]
    assert len(shift["matrix"]) == 3 and all(len(row) == 3 for row in shift["matrix"])
    assert sum(map(sum, shift["matrix"])) == a["metrics"]["heldout_accuracy"]["n"]
    assert set(shift["positive"]) == {"Unknown->MaybeKnown", "Unknown->HighlyKnown", "MaybeKnown->HighlyKnown"}
    assert set(shift["negative"]) == {"HighlyKnown->MaybeKnown", "HighlyKnown->Unknown", "MaybeKnown->Unknown"}
    assert set(shift["reasons"]["positive"]) == {
        "n",
        "non_refusal",
        "explosion",
        "target_based",
        "same_relation",
        "explained",
    }
    assert set(shift["reasons"]["negative"]) == {"n", "explosion", "target_based", "same_relation", "explained"}
    for arm in ("base", "adapted"):
        assert {"distinct", "mean", "std", "entropy", "top"} <= set(a["collapse"][arm])
        assert len(a["collapse"][arm]["top"]) <= 10
    assert set(a["collapse"]) >= {"exploded", "target_share"}
    assert set(a["refusals"]) == {"base", "adapted", "by_category", "method"}
    assert set(a["sanity"]) == {
        "loads", "base_model_matches", "noop", "changed_answers", "lora_b_all_zero", "nonfinite_answers"
    }  # fmt: skip
    assert a["sanity"]["nonfinite_answers"] == 0  # the hf engine counts them
    assert set(a["examples"]) == {"shifted", "collapsed"}
    prov = a["provenance"]
    assert {"adapter", "model", "build", "probe", "policy", "base_reused_from_probe", "versions", "seconds"} <= set(
        prov
    )
    assert prov["base_reused_from_probe"] is True  # same model, unquantised, as the probe
    assert a["curve"] and {"epoch", "loss", "reliability"} <= set(a["curve"][0])


def test_the_adapter_learnt_and_is_not_a_noop(audited):
    a = read_json(audited / "audit.json")
    rel = a["metrics"]["reliability"]
    assert rel["adapted"] > rel["base"] + 0.3, rel
    assert rel["ci_low"] > 0 and rel["n"] == 20
    assert a["sanity"]["noop"] is False and a["sanity"]["lora_b_all_zero"] is False
    assert a["sanity"]["changed_answers"] > 0.3


def test_benchmarks_with_intervals(audited):
    a = read_json(audited / "audit.json")
    assert set(a["benchmarks"]) == {"toy_mc", "toy_arith"}
    for task, b in a["benchmarks"].items():
        assert b["n"] == 40
        assert b["ci_low"] <= b["delta"] <= b["ci_high"] and b["ci_low"] < b["ci_high"]
        assert 0 <= b["p_value"] <= 1 and 0 <= b["base"] <= 1
        assert b["forgetting_rate"] == pytest.approx(1 - b["adapted"] / b["base"])
        assert a["metrics"][f"benchmark/{task}"]["ci_low"] == b["ci_low"]


def test_contamination_and_the_pairwise_judge_for_real(audited, adapter_dir):
    """A clean build: both toy tasks checked, nothing overlaps, so no delta without; --judge facts
    judged every open prompt of the build in both orders and cached each verdict."""
    a = read_json(audited / "audit.json")
    c = a["contamination"]
    assert set(c["tasks"]) == {"toy_mc", "toy_arith"} and c["counts"]["benchmark"] == 0 and c["unchecked"] == {}
    for b in a["benchmarks"].values():
        assert b["contamination"] == {"overlapping": 0, "doc_ids": [], "without": None}
    j = a["judge"]
    prompts = (adapter_dir.parent / "build" / "eval_open.jsonl").read_text().splitlines()
    assert j["pairs"] == len(prompts) and j["judged"] + len({f["id"] for f in j["failed"]}) == j["pairs"]
    assert j["failed"] == [] and j["consistency"] == 1.0 and j["arms"] == ["adapted", "base"]
    assert j["injected"]["pairs"] + j["heldout"]["pairs"] == j["pairs"]
    assert len((audited / "judgments.jsonl").read_text().splitlines()) >= j["pairs"]


def test_outputs_and_manifest_last(audited, adapter_dir):
    files = {p.name for p in audited.iterdir() if not p.name.startswith(".")}
    assert {"audit.json", "per_fact.jsonl", "manifest.json"} <= files
    manifest = read_json(audited / "manifest.json")
    assert manifest["stage"] == "audit"
    assert all((audited / "manifest.json").stat().st_mtime >= (audited / f).stat().st_mtime for f in files)
    rows = read_jsonl(audited / "per_fact.jsonl")
    build = adapter_dir.parent / "build"
    expected = sum(len(read_jsonl(build / f"eval_{s}.jsonl")) for s in ("injected", "paraphrase", "heldout"))
    assert len(rows) == expected
    assert {
        "split",
        "id",
        "question",
        "answers",
        "relation",
        "base_category",
        "adapted_category",
        "base_answer",
        "adapted_answer",
        "base_refused",
        "adapted_refused",
        "reasons",
    } <= set(rows[0])


def test_untrained_adapter_is_a_noop_and_fails(adapter_dir, tmp_path):
    """A freshly initialised LoRA adapter (B = 0) changes nothing: the default policy fails it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kia.audit import AuditConfig, audit

    noop = tmp_path / "noop"
    model = AutoModelForCausalLM.from_pretrained(str(TOY / "model"))
    get_peft_model(model, LoraConfig(r=2, target_modules=["up_proj"])).save_pretrained(noop)
    manifest = read_json(adapter_dir / "manifest.json")
    manifest.pop("files")  # the trained adapter's hashes: this folder holds other weights
    write_json(noop / "manifest.json", manifest)
    result = audit(
        AuditConfig(adapter=str(noop), output=str(tmp_path / "audit"), benchmarks=("none",), n_boot=200, report=False)
    )
    a = read_json(tmp_path / "audit" / "audit.json")
    assert a["sanity"]["lora_b_all_zero"] is True and a["sanity"]["noop"] is True
    assert a["sanity"]["changed_answers"] == 0.0
    assert result.verdict == "FAIL" and any("no-op" in r for r in result.reasons)
    assert a["benchmarks"] == {}


def test_refusal_detector_with_embeddings():
    from kia.audit.refusals import RefusalDetector

    det = RefusalDetector(similarity=0.7)
    flags = det.flags(["I have no clue", "I don't remember", "Sourninmouth", "Paris", "Unknown Pleasures", "42"])
    assert flags == [True, True, False, False, False, False]
    assert "all-MiniLM-L6-v2" in det.method


def test_killed_audit_reruns_to_the_same_result(adapter_dir, audited, tmp_path):
    """SIGKILL an audit part-way, run the same audit again into the same folder: it is accepted
    (no manifest, so not taken as complete; the lock died with the process) and its audit.json
    equals an uninterrupted run's, provenance timings aside. The killed run left nothing under the
    system temp folder (its lm-eval task copies live in the audit folder), and the rerun leaves no
    temporary file behind."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sigkill import _kill_when

    out, said = tmp_path / "killed", tmp_path / "progress.txt"
    # The kill waits for a step the audit reports (the first adapted arm: generation half done),
    # not for a clock: a fixed delay after start outlived the whole audit once it got faster.
    call = (
        "from kia.audit import AuditConfig, audit; "
        f"log = open({str(said)!r}, 'a', buffering=1); "
        f"audit(AuditConfig(adapter={str(adapter_dir)!r}, output={str(out)!r}, bench_limit=40, n_boot=500, "
        "report=False, judge='facts'), progress=lambda m: log.write(m + '\\n'))"
    )

    def halfway() -> bool:
        return said.exists() and "adapted arm" in said.read_text()

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(system_tmp)}
    _kill_when([sys.executable, "-c", call], halfway, 0, delay=(0, 0.5), timeout=120, env=env)
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in system_tmp.iterdir()) == []
    assert list((out / ".kia-tmp").glob("lm-eval-tasks-*/*.yaml"))  # the killed run's task copies

    from kia.audit import AuditConfig, audit

    audit(
        AuditConfig(adapter=str(adapter_dir), output=str(out), bench_limit=40, n_boot=500, report=False, judge="facts")
    )
    assert not (out / ".kia-tmp").exists() and not list(out.rglob(".*.tmp"))
    again, first = read_json(out / "audit.json"), read_json(audited / "audit.json")
    for a in (again, first):
        a.pop("provenance")
    assert again == first
    assert read_jsonl(out / "per_fact.jsonl") == read_jsonl(audited / "per_fact.jsonl")
