"""Tier 1: the policy file, the verdict, the orchestration of `kia audit` and its exit codes, with a
fake two-arm engine (no model). The world is the hand-worked one of test_audit_metrics.py."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from kia.artifacts import read_json, read_jsonl, write_json, write_jsonl, write_manifest
from kia.audit import AuditConfig, audit
from kia.audit.policy import DEFAULT_POLICY, Policy, judge, load_policy
from kia.errors import ConfigError
from kia.facts import Fact
from kia.probe.prompts import ExemplarSets

IDK = "I don't know."
LENIENT = "max_negative_shift = 0.5\nmax_refusal_change = 0.5\nexplosion_floor = 3\nexplosion_factor = 3\n"

# ------------------------------------------------------------------------------------------ policy


def test_shipped_policy_matches_the_builtin_defaults():
    shipped = load_policy()
    assert shipped.source == str(DEFAULT_POLICY)
    assert replace(shipped, source="x") == replace(Policy(), source="x")
    assert load_policy(DEFAULT_POLICY).min_reliability == 0.8


def test_partial_policy_keeps_defaults(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("min_reliability = 0.5\nmax_exploded_answers = 10\n")
    p = load_policy(path)
    assert (p.min_reliability, p.max_exploded_answers, p.max_negative_shift) == (0.5, 10, Policy().max_negative_shift)
    assert load_policy(_write(tmp_path, "min_reliability = 1\n")).min_reliability == 1.0  # an int is a number


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("min_reliabilty = 0.8\n", "unknown key 'min_reliabilty'; did you mean 'min_reliability'?"),
        ("colour = 'red'\n", "unknown key 'colour'; known keys: min_reliability"),
        ("[thresholds]\nmin_reliability = 0.8\n", "unknown section 'thresholds'"),
        ("min_reliability = 'high'\n", "key 'min_reliability' must be a number, got 'high' (str)"),
        ("min_reliability = 1.5\n", "key 'min_reliability' must be between 0 and 1, got 1.5"),
        ("max_exploded_answers = 2.5\n", "key 'max_exploded_answers' must be a whole number, got 2.5 (float)"),
        ("max_exploded_answers = true\n", "key 'max_exploded_answers' must be a whole number, got True (bool)"),
        ("fail_on_noop = 1\n", "key 'fail_on_noop' must be true or false, got 1 (int)"),
        ("explosion_floor = 0\n", "key 'explosion_floor' must be at least 1, got 0"),
        ("min_reliability = \n", "not valid TOML"),
    ],
)
def test_bad_policy_names_file_and_key(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.toml")


def _metric(base, adapted, n=10, **kw):
    return {"base": base, "adapted": adapted, "delta": None if base is None else adapted - base, "n": n, **kw}


def _good_audit(**changes):
    a = {
        "metrics": {
            "reliability": _metric(0.0, 0.95, 100),
            "generalisation": _metric(0.0, 0.4, 100),
            "negative_shift": _metric(None, 0.05, 150),
            "refusal_rate": _metric(0.10, 0.08, 300),
            "exploded_answers": _metric(None, 1.0),
        },
        "sanity": {"noop": False, "lora_b_all_zero": False},
        "collapse": {"exploded": [{"answer": "Zed", "base": 0, "adapted": 9}]},
        "benchmarks": {"toy_mc": {"base": 0.60, "adapted": 0.58, "ci_low": -0.10, "ci_high": 0.06, "p_value": 0.5}},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        a[section][name] = value
    return a


def test_judge_pass_and_each_failure_with_numbers():
    verdict, reasons, checks = judge(Policy(), _good_audit())
    assert verdict == "PASS" and reasons == []
    assert {c.rule for c in checks} >= {
        "fail_on_noop",
        "min_reliability",
        "max_negative_shift",
        "max_refusal_change",
        "max_exploded_answers",
        "max_benchmark_drop:toy_mc",
    }
    cases = {
        "metrics__reliability": (
            _metric(0.0, 0.62, 20),
            "reliability 0.620 (base 0.000, 20 injected facts) < min_reliability 0.800",
        ),
        "metrics__negative_shift": (_metric(None, 0.21, 150), "negative shift 0.210 (of 150"),
        "metrics__refusal_rate": (_metric(0.15, 0.01), "refusal rate changed by -0.140 (0.150 -> 0.010) beyond"),
        "metrics__exploded_answers": (
            _metric(None, 5.0),
            "5 exploded answers ('Zed' 0 -> 9 questions) > max_exploded_answers 3",
        ),
        "sanity__noop": (True, "the adapter is a no-op: its greedy answers equal the base model's"),
    }
    for key, (value, text) in cases.items():
        verdict, reasons, _ = judge(Policy(), _good_audit(**{key: value}))
        assert verdict == "FAIL" and len(reasons) == 1 and text in reasons[0], (key, reasons)
    assert judge(Policy(fail_on_noop=False), _good_audit(sanity__noop=True))[0] == "PASS"
    # generalisation is judged only when the policy asks for it
    assert judge(Policy(min_generalisation=0.5), _good_audit())[1][0].startswith("generalisation 0.400")


def test_benchmark_drop_is_judged_with_its_interval():
    big_noisy = {"base": 0.60, "adapted": 0.50, "ci_low": -0.25, "ci_high": 0.05, "p_value": 0.2}
    big_real = {"base": 0.60, "adapted": 0.50, "ci_low": -0.16, "ci_high": -0.04, "p_value": 0.001}
    small_real = {"base": 0.60, "adapted": 0.57, "ci_low": -0.05, "ci_high": -0.01, "p_value": 0.01}
    assert judge(Policy(), _good_audit(benchmarks__toy_mc=big_noisy))[0] == "PASS"  # drop 0.10 but not significant
    assert judge(Policy(), _good_audit(benchmarks__toy_mc=small_real))[0] == "PASS"  # significant but within budget
    verdict, reasons, _ = judge(Policy(), _good_audit(benchmarks__toy_mc=big_real))
    assert verdict == "FAIL"
    assert "benchmark toy_mc: accuracy 0.600 -> 0.500 (change -0.100, 95% CI [-0.160, -0.040]" in reasons[0]


# ------------------------------------------------------------------------------ a scripted world

SPEC = {
    # id: (relation, base answers per set, adapted answers per set); see test_audit_metrics.py
    "h0": ("r1", ["A-h0"] * 3, ["A-h0"] * 3),
    "h1": ("r1", ["A-h1"] * 3, ["Zed"] * 3),
    "h2": ("r2", ["A-h2"] * 3, ["A-h2"] * 2 + ["Nowhere"]),
    "h3": ("r2", ["A-h3"] * 3, ["A-h3"] * 3),
    "m0": ("r2", ["A-m0", "Nowhere", "Nowhere"], ["A-m0"] * 3),
    "m1": ("r2", ["A-m1", "Nowhere", "Nowhere"], ["A-m1", "Nowhere", "Nowhere"]),
    "m2": ("r2", ["A-m2", "Nowhere", "Nowhere"], ["Zed"] * 3),
    "m3": ("r2", ["A-m3", "Nowhere", "Nowhere"], ["A-m3", "Nowhere", "Nowhere"]),
    "u0": ("r1", [IDK] * 3, ["A-u0"] * 3),
    "u1": ("r2", [IDK] * 3, ["Zed"] * 3),
    "u2": ("r2", ["Nowhere"] * 3, ["A-u2", "Nowhere", "Nowhere"]),
    "u3": ("r2", ["Nowhere"] * 3, ["Nowhere"] * 3),
}
INJECTED = {"i0": "Zed", "i1": "Ione", "i2": "Itwo", "i3": "Ithree"}


class TwoArmEngine:
    """Answers by (question, exemplar set) from a table, differently with the adapter on."""

    name = "scripted"
    model_id = "scripted"
    has_adapter = True
    bos = ""

    def __init__(self, noop: bool = False):
        self.noop = noop
        self.calls = {False: 0, True: 0}

    def chat(self, messages):
        return "".join(m["content"] + "\n" for m in messages)

    def close(self):
        pass

    def answer(self, question: str, s: int, adapter: bool) -> str:
        adapter = adapter and not self.noop
        if m := re.fullmatch(r"Question about (\w+)\?", question):
            return SPEC[m.group(1)][2 if adapter else 1][s]
        if m := re.fullmatch(r"(Injected|Reworded) (\d)\?", question):
            k = int(m.group(2))
            known = adapter and (m.group(1) == "Injected" or k < 2)
            return list(INJECTED.values())[k] if known else (IDK if not adapter else "Nowhere")
        raise AssertionError(question)

    def generate(self, prompts, sampling, *, adapter=False):
        self.calls[adapter] += len(prompts)
        out = []
        for p in prompts:
            question = p.text.rstrip("\n").rsplit("\n", 1)[-1].split(": ", 1)[1]
            s = int(re.search(r"Exemplar (\d)-", p.text).group(1))
            out.append([f"Answer: {self.answer(question, s, adapter)}"])
        return out


def make_world(root: Path, *, probe_answers: str | None = "right", lora_b: float = 0.5) -> Path:
    """Probe, build and adapter folders of the scripted world; returns the adapter folder."""
    import numpy as np
    from safetensors.numpy import save_file

    probe, build, adapter = root / "probe", root / "build", root / "adapter"
    exemplars = [
        [Fact(id=f"e{s}{j}", question=f"Exemplar {s}-{j}?", answers=(f"E{s}{j}",)) for j in range(2)] for s in range(3)
    ]
    spares = [Fact(id=f"sp{j}", question=f"Exemplar 9-{j}?", answers=("S",)) for j in range(4)]
    sets = ExemplarSets({"*": exemplars}, {"*": spares}).to_json()
    held = [
        Fact(id=i, question=f"Question about {i}?", answers=(f"A-{i}",), relation=rel)
        for i, (rel, _, _) in SPEC.items()
    ]
    inj = [Fact(id=i, question=f"Injected {i[1]}?", answers=(a,), relation="r1") for i, a in INJECTED.items()]
    para = [
        {**Fact(id=f"{i}~p0", question=f"Reworded {i[1]}?", answers=(a,), relation="r1").to_dict(), "source_id": i}
        for i, a in INJECTED.items()
    ]
    pconfig = {
        "facts": "x.jsonl",
        "model": "scripted",
        "n_sets": 3,
        "shots": 2,
        "match": "contains",
        "max_new_tokens": 32,
        "seed": 0,
        "quant": "none",
        "engine": "hf",
        "adapter": None,
    }
    probe.mkdir()
    write_json(probe / "exemplars.json", sets)
    if probe_answers:
        rows = [
            {
                "id": f.id,
                "question": f.question,
                "greedy_answers": SPEC[f.id][1] if probe_answers == "right" else ["Other"] * 3,
            }
            for f in held
        ] + [{"id": f.id, "question": f.question, "greedy_answers": [IDK] * 3} for f in inj]
        pl.DataFrame(rows).write_parquet(probe / "facts.parquet")
    write_manifest(probe, stage="probe", config=pconfig, model={"id": "scripted"})
    build.mkdir()
    write_jsonl(build / "eval_heldout.jsonl", [f.to_dict() for f in held])
    write_jsonl(build / "eval_injected.jsonl", [f.to_dict() for f in inj])
    write_jsonl(build / "eval_paraphrase.jsonl", para)
    write_jsonl(
        build / "train.jsonl",
        [
            {"id": f.id, "fact_id": f.id, "kind": "unknown", "question": f.question, "answer": f.answer, "messages": []}
            for f in inj
        ],
    )
    write_json(build / "exemplars.json", sets)
    write_manifest(build, stage="build", config={}, model="scripted", inputs={"probe": {"path": str(probe)}})
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "base_model_name_or_path": "scripted",
                "peft_type": "LORA",
                "r": 1,
                "lora_alpha": 2,
                "target_modules": ["up_proj"],
            }  # fmt: skip
        )
    )
    save_file(
        {
            "base_model.model.layers.0.mlp.up_proj.lora_B.weight": np.full((4, 1), lora_b, dtype=np.float32),
            "base_model.model.layers.0.mlp.up_proj.lora_A.weight": np.ones((1, 4), dtype=np.float32),
        },
        str(adapter / "adapter_model.safetensors"),
    )
    write_jsonl(
        adapter / "train_log.jsonl",
        [{"epoch": 1, "loss": 2.0, "reliability": 0.5, "heldout_known_reliability": 1.0, "seconds": 1.0}],
    )
    write_manifest(adapter, stage="inject", config={"build": str(build), "quant": "none"}, model="scripted")
    return adapter


def _config(root: Path, **kw) -> AuditConfig:
    return AuditConfig(
        adapter=str(root / "adapter"),
        output=str(root / "audit"),
        benchmarks=("none",),
        refusal_embeddings=False,
        n_boot=200,
        report=False,
        **kw,
    )


def test_scripted_audit_end_to_end(tmp_path):
    make_world(tmp_path)
    engine = TwoArmEngine()
    steps: list[str] = []
    result = audit(_config(tmp_path), progress=steps.append, engine=engine)
    out = tmp_path / "audit"
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "manifest.json", "per_fact.jsonl"]
    a = read_json(out / "audit.json")
    assert result.verdict == a["verdict"] == "FAIL" and result.exit_code == 1
    assert len(a["reasons"]) == 2
    assert a["reasons"][0].startswith("negative shift 0.375") and "refusal rate changed by -0.167" in a["reasons"][1]
    assert a["metrics"]["reliability"]["base"] == 0.0 and a["metrics"]["reliability"]["adapted"] == 1.0
    assert a["metrics"]["generalisation"]["adapted"] == 0.5
    assert a["shift"]["matrix"] == [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    assert a["collapse"]["exploded"] == []  # "Zed" reaches 3 questions, under the default floor of 5
    assert a["curve"][0]["epoch"] == 1
    assert a["sanity"] == {
        "loads": True,
        "base_model_matches": True,
        "noop": False,
        "changed_answers": 1.0,
        "lora_b_all_zero": False,
        "nonfinite_answers": None,  # a scripted engine cannot tell
    }
    prov = a["provenance"]
    assert prov["base_reused_from_probe"] is True and prov["policy"]["min_reliability"] == 0.8
    assert prov["model"] == "scripted" and prov["probe"] == str(tmp_path / "probe")
    # Reuse: the base arm of held-out and injected facts came from the probe run (plus the spot check),
    # so only the paraphrases' 4 x 3 base prompts and 8 spot-check prompts were generated.
    assert engine.calls[False] == 8 + 4 * 3
    assert engine.calls[True] == (12 + 4 + 4) * 3
    assert len(read_jsonl(out / "per_fact.jsonl")) == 20
    manifest = read_json(out / "manifest.json")
    assert manifest["stage"] == "audit" and manifest["verdict"] == "FAIL"
    assert any("adapted arm" in s for s in steps)


def test_base_arm_is_regenerated_when_the_probe_run_differs(tmp_path):
    make_world(tmp_path, probe_answers="other")
    engine = TwoArmEngine()
    result = audit(_config(tmp_path), engine=engine)
    a = read_json(result.output / "audit.json")
    assert a["provenance"]["base_reused_from_probe"] is False
    assert "spot check: 8 of 8" in a["provenance"]["base_reuse_note"]
    assert a["shift"]["matrix"] == [[2, 1, 1], [1, 2, 1], [1, 1, 2]]  # the fresh base arm, not the probe's
    assert engine.calls[False] == 8 + 20 * 3


def test_no_reuse_without_probe_rows_and_lenient_policy_passes(tmp_path):
    make_world(tmp_path, probe_answers=None)
    policy = _write(tmp_path, LENIENT)
    result = audit(_config(tmp_path, policy=str(policy)), engine=TwoArmEngine())
    assert result.verdict == "PASS" and result.reasons == []
    a = read_json(result.output / "audit.json")
    assert a["provenance"]["base_reused_from_probe"] is False
    assert a["provenance"]["policy"]["max_negative_shift"] == 0.5
    assert a["collapse"]["exploded"] == [{"answer": "Zed", "base": 0, "adapted": 3}]
    assert a["metrics"]["exploded_answers"]["adapted"] == 1.0


def test_noop_adapters_fail(tmp_path):
    make_world(tmp_path)
    policy = _write(tmp_path, LENIENT)
    result = audit(_config(tmp_path, policy=str(policy)), engine=TwoArmEngine(noop=True))
    assert result.verdict == "FAIL" and "no-op: its greedy answers equal" in result.reasons[0]
    zero = tmp_path / "zero"
    zero.mkdir()
    make_world(zero, lora_b=0.0)
    result = audit(_config(zero, policy=str(policy)), engine=TwoArmEngine())
    assert result.verdict == "FAIL" and "all LoRA B matrices are zero" in result.reasons[0]


def test_output_folder_needs_overwrite(tmp_path):
    make_world(tmp_path)
    audit(_config(tmp_path), engine=TwoArmEngine())
    from kia.errors import ArtifactError

    with pytest.raises(ArtifactError, match="--overwrite"):
        audit(_config(tmp_path), engine=TwoArmEngine())
    audit(_config(tmp_path, overwrite=True), engine=TwoArmEngine())


# ------------------------------------------------------------------------------------------- CLI


def _cli(args):
    from kia.cli import cli
    from kia.commands import register

    register(cli)
    return CliRunner().invoke(cli, ["audit", *args])


def _patch_engine(monkeypatch):
    import kia.audit

    monkeypatch.setattr(kia.audit.run, "load_engine", lambda config: TwoArmEngine())


def test_cli_exit_codes(tmp_path, monkeypatch):
    make_world(tmp_path)
    _patch_engine(monkeypatch)
    base = [str(tmp_path / "adapter"), "--benchmarks", "none", "--no-refusal-embeddings", "--no-report"]
    fail = _cli([*base, "-o", str(tmp_path / "a1"), "--json"])
    assert fail.exit_code == 1, fail.output
    assert json.loads(fail.stdout)["verdict"] == "FAIL"
    ok = _cli([*base, "-o", str(tmp_path / "a2"), "--policy", str(_write(tmp_path, LENIENT))])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("max_negativ_shift = 0.2\n")
    err = _cli([*base, "-o", str(tmp_path / "a3"), "--policy", str(bad)])
    assert err.exit_code == 2
    assert str(bad) in err.stderr and "max_negativ_shift" in err.stderr
    assert not (tmp_path / "a3").exists()  # a bad policy stops before any output


def test_cli_missing_manifest_is_exit_2(tmp_path):
    (tmp_path / "adapter").mkdir()
    result = _cli([str(tmp_path / "adapter"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "manifest.json" in result.stderr
