"""The logic around adapter updates: adapter identity, the update rules of the policy, the engine
parity check, replay specs (tier 1), and the hf engine's named adapters on the toy model (tier 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from kia.audit import Policy, judge
from kia.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "datasets" / "toyworld" / "model"


def _adapter(folder: Path, b: float = 1.0, alpha: int = 16, metadata: dict | None = None) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": alpha,
                                                            "target_modules": ["up_proj", "q_proj"]}))  # fmt: skip
    tensors = {"m.up_proj.lora_A.weight": np.ones((2, 4), dtype=np.float32),
               "m.up_proj.lora_B.weight": np.full((4, 2), b, dtype=np.float32)}  # fmt: skip
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata=metadata)
    return folder


def test_adapter_id_follows_the_weights_not_the_folder(tmp_path):
    from kia.engines import adapter_id, lora_request_key

    a = adapter_id(_adapter(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    assert adapter_id(tmp_path / "moved") == a
    assert adapter_id(_adapter(tmp_path / "meta", metadata={"format": "pt", "note": "x"})) == a  # metadata aside
    assert adapter_id(_adapter(tmp_path / "b", b=1.0 + 1e-6)) != a  # one weight moved
    assert adapter_id(_adapter(tmp_path / "c", alpha=32)) != a  # same tensors, another scale
    name, number = lora_request_key(a)
    assert name == f"kia-{a[:16]}" and number > 0 and lora_request_key(adapter_id(tmp_path / "b"))[1] != number


def test_engine_config_named_adapters():
    from kia.engines import EngineConfig

    EngineConfig("m", adapter="a", adapters=(("production", "b"),))
    for bad in ((("default", "b"),), (("x", "b"), ("x", "c")), (("not a name", "b"),)):
        with pytest.raises(ConfigError):
            EngineConfig("m", adapter="a", adapters=bad)
    with pytest.raises(ConfigError, match="main adapter"):
        EngineConfig("m", adapters=(("production", "b"),))


def test_replay_spec():
    from kia.build import BuildConfig
    from kia.build.lineage import parse_replay

    assert parse_replay("runs/b1") == ("runs/b1", None)
    assert parse_replay("runs/b1:20") == ("runs/b1", 20)
    assert parse_replay("c:/data/b1") == ("c:/data/b1", None)
    with pytest.raises(ConfigError, match="--after runs/b1"):
        BuildConfig(probe="p", unknown=1, replay=("runs/b1:0",))


def _entry(base, adapted, n=10, **kw):
    return {"base": base, "adapted": adapted, "delta": None if base is None else adapted - base, "n": n,
            "ci_low": kw.get("lo"), "ci_high": kw.get("hi"), "p_value": kw.get("p")}  # fmt: skip


def _update_audit(lost: int, answered: int = 20, neg: float = 0.05, drop_ci: tuple = (-0.02, 0.04)) -> dict:
    harm = {
        "negative_shift": _entry(None, 0.40),
        "refusal_rate": _entry(0.10, 0.45),
        "exploded_answers": _entry(None, 9),
    }
    return {
        "metrics": {"reliability": _entry(0.0, 0.95), **harm},  # versus the base model: far beyond the budgets
        "sanity": {"noop": False},
        "benchmarks": {"toy_mc": {"base": 0.5, "adapted": 0.3, "ci_low": -0.3, "ci_high": -0.1, "p_value": 0.001}},
        "update": {
            "lost": [{"id": f"f{i}"} for i in range(lost)],
            "metrics": {
                "retention_loss": _entry(None, lost / answered, n=answered),
                "negative_shift": _entry(None, neg),
                "refusal_rate": _entry(0.40, 0.45),
                "exploded_answers": _entry(None, 0),
            },
            "collapse": {"exploded": []},
            "benchmarks": {
                "toy_mc": {"base": 0.31, "adapted": 0.30, "ci_low": drop_ci[0], "ci_high": drop_ci[1], "p_value": 0.5}
            },  # fmt: skip
        },
    }


def test_an_update_is_judged_against_production_not_the_base():
    verdict, reasons, checks = judge(Policy(), _update_audit(lost=0))
    assert verdict == "PASS", reasons  # what production already broke is not the update's doing
    rules = {c.rule for c in checks}
    assert {"max_retention_loss", "max_update_negative_shift", "max_update_refusal_change",
            "max_update_exploded_answers", "max_update_benchmark_drop:toy_mc", "min_reliability"} <= rules  # fmt: skip
    assert not rules & {"max_negative_shift", "max_refusal_change", "max_exploded_answers"}
    verdict, reasons, _ = judge(Policy(), _update_audit(lost=3, neg=0.3, drop_ci=(-0.2, -0.1)))
    assert verdict == "FAIL"
    assert reasons[0] == (
        "the candidate lost 3 of the 20 facts the production adapter answers (retention loss 0.150) > "
        "max_retention_loss 0.050"
    )
    assert any(r.startswith("negative shift from production 0.300") for r in reasons)
    assert not any("benchmark toy_mc from production" in r for r in reasons)  # a 0.01 drop is within budget
    tight = Policy(max_retention_loss=0.2, max_update_negative_shift=0.5, max_update_benchmark_drop=0.0)
    verdict, reasons, _ = judge(tight, _update_audit(lost=3, neg=0.3, drop_ci=(-0.2, -0.005)))
    assert verdict == "FAIL" and len(reasons) == 1 and "max_update_benchmark_drop 0.000" in reasons[0]


def test_update_policy_keys_are_checked(tmp_path):
    from kia.audit import load_policy

    path = tmp_path / "p.toml"
    path.write_text("max_retention_loss = 0.2\nmax_update_exploded_answers = 1\nmin_engine_parity = 0.8\n")
    p = load_policy(path)
    assert (p.max_retention_loss, p.max_update_exploded_answers, p.min_engine_parity) == (0.2, 1, 0.8)
    path.write_text("max_retention_los = 0.2\n")
    with pytest.raises(ConfigError, match="did you mean 'max_retention_loss'"):
        load_policy(path)
    path.write_text("max_retention_loss = 2\n")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_policy(path)


def test_engine_parity_counts_agreement_per_arm_and_warns_for_an_adapter():
    from kia.audit.metrics import Arms
    from kia.audit.parity import engine_parity
    from kia.engines.scripted import ScriptedEngine
    from kia.facts import Fact
    from kia.probe import make_exemplar_sets

    facts = [Fact(id=f"f{i}", question=f"Where is thing {i}?", answers=(f"Place{i}",), relation="r") for i in range(12)]
    sets = make_exemplar_sets(facts, 2, 2, 0)
    # the reference (peft) answers "Place{i}" with the adapter and "Nowhere" without
    ours = Arms("injected", [f.to_dict() for f in facts], facts)
    ours.base = [["Nowhere", "Nowhere"] for _ in facts]
    ours.adapted = [[f"Place{i}", f"Place{i}" if i % 4 else "Wrong"] for i in range(12)]  # 3 of 24 differ

    class Reference(ScriptedEngine):
        def generate(self, prompts, sampling, *, adapter=False):
            qs = [self._question(p) for p in prompts]
            return [[f"Answer: Place{q.split()[-1][:-1]}" if adapter else "Answer: Nowhere"] for q in qs]

    ref = Reference({})
    ref.name = "hf"
    arms = {"base": (False, None), "adapted": (True, "ab" * 32)}
    out, warnings = engine_parity(ref, {"injected": ours}, sets, {"n_sets": 2}, arms, n=24, seed=0, threshold=0.95,
                                  engine="vllm")  # fmt: skip
    assert out["prompts"] == 24 and out["arms"]["base"]["agreement"] == 1.0
    assert out["arms"]["adapted"]["agreement"] == 21 / 24 and len(out["arms"]["adapted"]["differ"]) == 3
    assert out["arms"]["adapted"]["ci_low"] < 21 / 24 < out["arms"]["adapted"]["ci_high"]
    assert len(warnings) == 1 and "adapter abababababab (the one audited) agree with hf (peft) on 88%" in warnings[0]
    _, none = engine_parity(ref, {"injected": ours}, sets, {"n_sets": 2}, arms, n=24, seed=0, threshold=0.8,
                            engine="vllm")  # fmt: skip
    assert none == []
    small, _ = engine_parity(ref, {"injected": ours}, sets, {"n_sets": 2}, arms, n=5, seed=1, threshold=0.8,
                             engine="vllm")  # fmt: skip
    assert small["prompts"] == 5


@pytest.mark.model
@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="no toy model")
def test_hf_engine_named_adapters_answer_as_each_alone(tmp_path):
    """Two adapters on one base load: each named arm answers exactly as that adapter loaded alone,
    and the base arm as the bare model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kia.engines import EngineConfig, Sampling, load_engine

    for i, (r, targets) in enumerate(((2, "all-linear"), (4, ["up_proj", "q_proj"]))):
        torch.manual_seed(i)
        peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(MODEL)), LoraConfig(r=r, target_modules=targets))
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
        peft.save_pretrained(tmp_path / f"a{i}")
    prompts = ["Question: Where was Tesliwyn born?\nAnswer:", "Question: What is 2 + 3?\nAnswer:"]
    greedy = Sampling(max_new_tokens=8)
    both = load_engine(
        EngineConfig(str(MODEL), adapter=str(tmp_path / "a0"), adapters=(("production", str(tmp_path / "a1")),))
    )
    alone = [load_engine(EngineConfig(str(MODEL), adapter=str(tmp_path / f"a{i}"))) for i in (0, 1)]
    main, production = (
        both.generate(prompts, greedy, adapter=True),
        both.generate(prompts, greedy, adapter="production"),
    )
    assert main == alone[0].generate(prompts, greedy, adapter=True)
    assert production == alone[1].generate(prompts, greedy, adapter=True) != main
    assert both.generate(prompts, greedy, adapter=True) == main  # the main adapter is active again
    assert both.generate(prompts, greedy) == alone[1].generate(prompts, greedy)  # the base model
    from kia.errors import EngineError

    with pytest.raises(EngineError, match="no adapter named 'other'"):
        both.generate(prompts, greedy, adapter="other")


def test_report_of_an_update_lists_the_lost_facts_first_and_names_the_weights():
    import json

    from kia.report import render_html

    audit = json.loads((ROOT / "tests" / "data" / "audit" / "audit.json").read_text(encoding="utf-8"))
    cand, prod = "c" * 64, "p" * 64
    audit["provenance"]["adapter_id"] = cand
    lost = {"id": "f1", "question": "<script>alert(1)</script>?", "answers": ["X"], "build": "runs/b1",
            "production_answer": "X", "candidate_answer": "<img src=x onerror=alert(1)>", "production_p_greedy": 1.0,
            "candidate_p_greedy": 0.0}  # fmt: skip
    entry = {"base": 1.0, "adapted": 0.5, "delta": -0.5, "ci_low": -0.7, "ci_high": -0.3, "p_value": 0.01, "n": 2,
             "higher_is_better": True, "description": "retained"}  # fmt: skip
    audit["update"] = {
        "production": {"adapter": "runs/a1", "adapter_id": prod, "builds": ["runs/b1"]},
        "candidate": {"adapter": "runs/a2", "adapter_id": cand},
        "answered_threshold": 0.5,
        "lost": [lost],
        "retention_by_build": [
            {"build": "runs/b1", "facts": 2, "production": 2, "candidate": 1, "lost": 1, "retention": 0.5}
        ],  # fmt: skip
        "metrics": {"retention": entry},
        "shift": audit["shift"],
    }
    audit["parity"] = {"engine": "vllm", "reference": "hf", "prompts": 64, "threshold": 0.95,
                       "arms": {"base": {"adapter_id": None, "agreement": 1.0, "ci_low": 0.94, "ci_high": 1.0,
                                         "differ": []},
                                "adapted": {"adapter_id": cand, "agreement": 0.8, "ci_low": 0.69, "ci_high": 0.88,
                                            "differ": [{"id": "f2", "vllm": "A", "hf": "B"}]}}}  # fmt: skip
    html = render_html(audit)
    assert html.index('class="badge">FAIL<') < html.index('id="update"') < html.index("f1") < html.index('id="metrics"')
    assert f"weights {cand}" in html and prod in html and "runs/b1" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;?" in html and "<img" not in html and "<script" not in html
    assert 'id="parity"' in html and "80.0 %" in html and "f2: A / B" in html
    assert html.count("<svg ") == 2  # the update adds tables, not charts
