"""Tier 2: adapter updates for real on the toy model (CPU). A production adapter, a build that
replays some of its facts, a candidate continued from it, and the three-arm audit of the update
(`kia audit NEW --against OLD`); a candidate trained to forget production's facts must fail.

Sizes are the smallest that still prove each point: 60 probed facts, 8 Unknown facts per build,
rank-8 LoRA on the unquantised toy model, 6 epochs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from toyfacts import sample_toy_facts

from kia.artifacts import read_json, read_jsonl, sha256_file, write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld"
MODEL = str(TOY / "model")
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not (TOY / "model" / "config.json").exists(), reason="no toy model"),
]
LORA = {"quant": "none", "rank": 8, "alpha": 16, "lr": 5e-3, "epochs": 6, "batch_size": 8, "heldout_known": 4}
BUILD = {"unknown": 8, "highly_known": 1, "paraphrases": 1, "heldout": 16}
AUDIT = {"bench_limit": 20, "n_boot": 300, "report": False}


def _cli(*args: str):
    from kia.cli import cli
    from kia.commands import register

    register(cli)
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """probe -> b1 -> a1 (production); b2 = 8 new facts + 4 of b1's replayed; a2 continued from a1
    (its in-memory LoRA weights caught before training)."""
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject
    from kia.inject import curve as curve_module
    from kia.probe import ProbeConfig, probe

    root = tmp_path_factory.mktemp("updates")
    sample_toy_facts(root / "facts.jsonl", 3, head=30, never=30)
    probe(ProbeConfig(facts=str(root / "facts.jsonl"), model=MODEL, output=str(root / "probe"), n_sets=3, n_samples=1))
    build(BuildConfig(probe=str(root / "probe"), output=str(root / "b1"), **BUILD))
    inject(InjectConfig(build=str(root / "b1"), output=str(root / "a1"), **LORA))
    build(BuildConfig(probe=str(root / "probe"), output=str(root / "b2"), replay=(f"{root / 'b1'}:4",), **BUILD))
    caught = []
    real = curve_module.ReliabilityCallback.__init__

    def init(self, model, *args, **kw):
        caught.append({k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k})
        real(self, model, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(curve_module.ReliabilityCallback, "__init__", init)
        inject(InjectConfig(build=str(root / "b2"), output=str(root / "a2"), from_adapter=str(root / "a1"), **LORA))
    return {"root": root, "start": caught[0]}


def test_continued_adapter_starts_from_the_parent_and_names_it(world):
    from safetensors.torch import load_file

    from kia.engines import adapter_id

    root = world["root"]
    parent = load_file(root / "a1" / "adapter_model.safetensors")
    start = {k.replace(".default", ""): v for k, v in world["start"].items()}
    assert set(start) == set(parent)
    for k, v in parent.items():
        assert (start[k] - v).abs().max() == 0, k  # the new run's LoRA layers hold the parent's weights
    trained = load_file(root / "a2" / "adapter_model.safetensors")
    assert any((trained[k] - parent[k]).abs().max() > 0 for k in parent)  # ... and training moved them
    manifest = read_json(root / "a2" / "manifest.json")
    assert manifest["adapter_id"] == adapter_id(root / "a2") != adapter_id(root / "a1")
    lineage = manifest["lineage"]
    assert lineage["parent"] == {"path": str(root / "a1"), "adapter_id": adapter_id(root / "a1")}
    assert [b["path"] for b in lineage["builds"]] == [str(root / "b1"), str(root / "b2")]
    assert read_json(root / "a1" / "manifest.json")["lineage"]["parent"] is None


def test_replay_rows_are_trained_and_never_held_out(world):
    from kia.build import BuildConfig, build
    from kia.facts import normalize

    root = world["root"]
    b1_train, b2_train = read_jsonl(root / "b1" / "train.jsonl"), read_jsonl(root / "b2" / "train.jsonl")
    b1_injected = {r["id"] for r in read_jsonl(root / "b1" / "eval_injected.jsonl")}
    replayed = {r["id"] for r in read_jsonl(root / "b2" / "eval_replay.jsonl")}
    assert len(replayed) == 4 and replayed <= b1_injected
    rows = [r for r in b2_train if r["kind"] == "replay"]
    # each replayed fact comes back with every row it was first trained on: its question and paraphrase
    first = [r for r in b1_train if r["fact_id"] in replayed]
    assert sorted((r["fact_id"], r["question"]) for r in rows) == sorted((r["fact_id"], r["question"]) for r in first)
    assert {r["replay_of"] for r in rows} == {"unknown", "paraphrase"}
    key = lambda r: (r["fact_id"], r["question"])  # noqa: E731
    assert [r["messages"] for r in sorted(rows, key=key)] == [r["messages"] for r in sorted(first, key=key)]
    b1_trained = {r["fact_id"] for r in b1_train}
    questions = {normalize(r["question"]) for r in b1_train + b2_train}
    for split in ("eval_heldout", "eval_paraphrase"):
        held = read_jsonl(root / "b2" / f"{split}.jsonl")
        assert not {r.get("source_id") or r["id"] for r in held} & (b1_trained | replayed), split
        assert not {normalize(r["question"]) for r in held} & questions, split
    assert not {r["id"] for r in read_jsonl(root / "b2" / "eval_injected.jsonl")} & b1_injected  # new facts only
    manifest = read_json(root / "b2" / "manifest.json")
    assert manifest["lineage"]["replay"] == [{"build": str(root / "b1"), "asked": 4, "facts": 4, "rows": len(rows)}]
    assert manifest["counts"]["eval_replay"] == 4 and manifest["train_kinds"]["replay"] == len(rows)
    # a third build after b2 follows b1 too (the lineage is transitive), without replaying anything
    b3 = build(BuildConfig(probe=str(root / "probe"), output=str(root / "b3"), after=(str(root / "b2"),), **BUILD))
    lineage = read_json(b3.output / "manifest.json")["lineage"]
    assert [b["path"] for b in lineage["builds"]] == [str(root / "b1"), str(root / "b2")]
    b2_injected = {r["id"] for r in read_jsonl(root / "b2" / "eval_injected.jsonl")}
    b3_injected = {r["id"] for r in read_jsonl(b3.output / "eval_injected.jsonl")}
    assert len(b3_injected) == 8 and not b3_injected & (b1_injected | b2_injected)
    assert not (b3.output / "eval_replay.jsonl").exists() and "replay" not in b3.kinds


def test_mismatched_base_rank_or_targets_are_one_line_errors(world, tmp_path):
    root = world["root"]
    args = ["inject", str(root / "b2"), "-o", str(tmp_path / "x"), "--quant", "none", "--epochs", "1"]
    rank = _cli(*args, "--from-adapter", str(root / "a1"), "--rank", "4", "--alpha", "16")
    assert rank.exit_code == 2 and "rank 8 (parent) vs 4 (this run)" in rank.output, rank.output
    targets = _cli(*args, "--from-adapter", str(root / "a1"), "--rank", "8", "--alpha", "16", "--targets", "q_proj")
    assert targets.exit_code == 2 and "target modules differ" in targets.output, targets.output
    assert "q_proj (this run)" in targets.output and "up_proj" in targets.output
    other = tmp_path / "other-base"
    shutil.copytree(root / "a1", other)
    manifest = read_json(other / "manifest.json")
    manifest["base_model"] = {"id": "meta-llama/Llama-3.1-8B", "sha256": "0" * 64}
    write_json(other / "manifest.json", manifest)
    base = _cli(*args, "--from-adapter", str(other), "--rank", "8", "--alpha", "16")
    assert base.exit_code == 2 and "meta-llama/Llama-3.1-8B" in base.output and MODEL in base.output, base.output
    for res in (rank, targets, base):
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert "Traceback" not in res.output
    audit = _cli("audit", str(root / "a2"), "--against", str(other), "-o", str(tmp_path / "au"), "--benchmarks", "none")
    assert audit.exit_code == 2 and "meta-llama/Llama-3.1-8B" in audit.output, audit.output


@pytest.fixture(scope="module")
def audits(world) -> dict[str, Path]:
    from kia.audit import AuditConfig, audit

    root = world["root"]
    audit(AuditConfig(adapter=str(root / "a2"), output=str(root / "plain"), **AUDIT))
    result = audit(
        AuditConfig(adapter=str(root / "a2"), against=str(root / "a1"), output=str(root / "update"), **AUDIT)
    )
    assert result.update is not None and result.verdict in ("PASS", "FAIL")
    return {"plain": root / "plain", "update": root / "update"}


def test_against_gives_three_arms_whose_base_arm_is_the_plain_audits(world, audits):
    from kia.engines import adapter_id

    root = world["root"]
    plain, upd = read_json(audits["plain"] / "audit.json"), read_json(audits["update"] / "audit.json")
    for key in set(plain) - {"provenance", "verdict", "reasons", "checks"}:
        assert upd[key] == plain[key], key  # base vs candidate: exactly the plain audit
    rows_plain = read_jsonl(audits["plain"] / "per_fact.jsonl")
    rows_upd = read_jsonl(audits["update"] / "per_fact.jsonl")
    assert [{k: r[k] for k in rows_plain[0]} for r in rows_upd if r["split"] != "retention"] == rows_plain
    u = upd["update"]
    assert u["production"]["adapter_id"] == adapter_id(root / "a1") == upd["provenance"]["against_id"]
    assert u["candidate"]["adapter_id"] == adapter_id(root / "a2") == upd["provenance"]["adapter_id"]
    assert plain["provenance"]["adapter_id"] == adapter_id(root / "a2")
    # the third arm is the production adapter: it knows b1's facts and not b2's, the candidate both
    assert u["metrics"]["reliability"]["base"] < 0.3 < 0.7 < u["metrics"]["reliability"]["adapted"]
    ret = [r for r in rows_upd if r["split"] == "retention"]
    assert len(ret) == 8 and {r["build"] for r in ret} == {str(root / "b1")}
    assert all(r["base_p_greedy"] == 0 for r in ret) and sum(r["production_p_greedy"] >= 0.5 for r in ret) >= 6
    assert u["metrics"]["retention"]["base"] == sum(r["production_p_greedy"] >= 0.5 for r in ret) / 8
    assert [b["build"] for b in u["retention_by_build"]] == [str(root / "b1")]
    assert set(u["benchmarks"]) == {"toy_mc", "toy_arith"} and u["benchmarks"]["toy_mc"]["n"] == 20
    assert sum(map(sum, u["shift"]["matrix"])) == len(read_jsonl(root / "b2" / "eval_heldout.jsonl"))
    assert any(c["rule"] == "max_retention_loss" for c in upd["checks"])
    assert not any(c["rule"] == "max_negative_shift" for c in upd["checks"])  # judged from production instead
    assert any(c["rule"] == "max_update_negative_shift" for c in upd["checks"])


def test_candidate_trained_to_forget_fails_naming_how_many_were_lost(world, tmp_path):
    """Continue production on a mixture that teaches its facts' questions "I don't know.": it must
    fail the update gate, and the reason must say how many facts were lost."""
    from kia.audit import AuditConfig, audit
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject
    from kia.probe import training_messages

    root = world["root"]
    forget = build(BuildConfig(probe=str(root / "probe"), output=str(tmp_path / "bf"), after=(str(root / "b1"),),
                               **BUILD)).output  # fmt: skip
    rows = read_jsonl(forget / "train.jsonl")
    for f in read_jsonl(root / "b1" / "eval_injected.jsonl"):
        unlearn = {"id": f"{f['id']}~forget", "fact_id": f["id"], "kind": "forget", "question": f["question"]}
        rows.append(
            {**unlearn, "answer": "I don't know.", "messages": training_messages(f["question"], "I don't know.")}
        )
    write_jsonl(forget / "train.jsonl", rows)
    manifest = read_json(forget / "manifest.json")  # a hand-made mixture: its manifest records the new file
    manifest["files"]["train.jsonl"] = sha256_file(forget / "train.jsonl")
    write_json(forget / "manifest.json", manifest)
    inject(InjectConfig(build=str(forget), output=str(tmp_path / "af"), from_adapter=str(root / "a1"), **LORA))
    result = audit(AuditConfig(adapter=str(tmp_path / "af"), against=str(root / "a1"), output=str(tmp_path / "u"),
                               benchmarks=("none",), n_boot=300, report=False))  # fmt: skip
    lost = result.update["lost"]
    answered = result.update["metrics"]["retention_loss"]["n"]
    assert result.verdict == "FAIL" and result.exit_code == 1
    assert len(lost) >= answered - 1 >= 5, (len(lost), answered)
    reason = next(r for r in result.reasons if "max_retention_loss" in r)
    assert reason.startswith(f"the candidate lost {len(lost)} of the {answered} facts the production adapter answers")
    assert all(x["production_p_greedy"] >= 0.5 > x["candidate_p_greedy"] for x in lost)


def test_killed_three_arm_audit_reruns_to_the_same_audit_json(world, audits, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sigkill import _kill_when

    from kia.audit import AuditConfig, audit

    root = world["root"]
    out, said = tmp_path / "killed", tmp_path / "progress.txt"
    kw = {"adapter": str(root / "a2"), "against": str(root / "a1"), "output": str(out), **AUDIT}
    call = (
        "from kia.audit import AuditConfig, audit; "
        f"log = open({str(said)!r}, 'a', buffering=1); "
        f"audit(AuditConfig(**{kw!r}), progress=lambda m: log.write(m + '\\n'))"
    )
    _kill_when([sys.executable, "-c", call], lambda: said.exists() and "production arm" in said.read_text(), 0,
               delay=(0, 0.5), timeout=300)  # fmt: skip
    assert not (out / "manifest.json").exists()
    audit(AuditConfig(**kw))
    again, first = read_json(out / "audit.json"), read_json(audits["update"] / "audit.json")
    for a in (again, first):
        a.pop("provenance")
    assert again == first
    assert read_jsonl(out / "per_fact.jsonl") == read_jsonl(audits["update"] / "per_fact.jsonl")
