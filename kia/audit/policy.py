"""The deploy gate: a TOML policy of thresholds turns audit figures into PASS or FAIL, with reasons.

    kia audit runs/inject --policy my-policy.toml     # exit 0 PASS, 1 FAIL, 2 error

The shipped default is probes/policy.toml (every key explained there). A policy file may leave keys
out (they keep the default); an unknown key or a value of the wrong type is an error naming the
file and the key, so a typo never silently loosens the gate.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kia.errors import ConfigError

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "probes" / "policy.toml"


@dataclass(frozen=True)
class Policy:
    """Thresholds of the gate (see probes/policy.toml for why each default is what it is)."""

    min_reliability: float = 0.8  # mean P_greedy on the injected facts, adapted arm
    min_generalisation: float = 0.0  # mean P_greedy on held-back paraphrases (0 = not judged)
    max_negative_shift: float = 0.15  # share of HighlyKnown/MaybeKnown held-out facts that got worse
    max_benchmark_drop: float = 0.05  # accuracy drop per benchmark, judged with its interval
    max_refusal_change: float = 0.10  # |adapted − base| refusal rate on held-out questions
    max_exploded_answers: int = 3  # answers given to far more questions than by the base model
    fail_on_noop: bool = True  # an adapter that changes nothing fails
    explosion_floor: int = 5  # an exploded answer is given to at least this many held-out questions
    explosion_factor: float = 5.0  # ... and to at least this many times as many as by the base model
    refusal_similarity: float = 0.7  # embedding cosine to a refusal example that counts as a refusal
    # An update (kia audit NEW --against OLD) is judged against the production adapter OLD:
    max_retention_loss: float = 0.05  # share of the facts production answers that the candidate lost
    max_update_negative_shift: float = 0.15  # held-out facts that moved down from production's category
    max_update_benchmark_drop: float = 0.05  # accuracy drop from production, judged with its interval
    max_update_refusal_change: float = 0.10  # |candidate − production| refusal rate
    max_update_exploded_answers: int = 3  # answers given to far more questions than production gives them
    min_engine_parity: float = 0.95  # --engine vllm: warn below this agreement with peft (never fails)
    min_judge_net: float = -1.0  # --judge: fail when net wins (win - loss) are surely below this (-1: off)
    source: str = "built-in defaults"

    def thresholds(self) -> dict[str, Any]:
        return asdict(self)


# key -> (kind, low, high); "share" is a float in [0, 1]
_SPEC: dict[str, tuple[str, float | None, float | None]] = {
    "min_reliability": ("share", 0, 1),
    "min_generalisation": ("share", 0, 1),
    "max_negative_shift": ("share", 0, 1),
    "max_benchmark_drop": ("share", 0, 1),
    "max_refusal_change": ("share", 0, 1),
    "max_exploded_answers": ("int", 0, None),
    "fail_on_noop": ("bool", None, None),
    "explosion_floor": ("int", 1, None),
    "explosion_factor": ("float", 1, None),
    "refusal_similarity": ("share", 0, 1),
    "max_retention_loss": ("share", 0, 1),
    "max_update_negative_shift": ("share", 0, 1),
    "max_update_benchmark_drop": ("share", 0, 1),
    "max_update_refusal_change": ("share", 0, 1),
    "max_update_exploded_answers": ("int", 0, None),
    "min_engine_parity": ("share", 0, 1),
    "min_judge_net": ("float", -1, 1),
}
assert set(_SPEC) == {f.name for f in fields(Policy)} - {"source"}


def _check(path: str, key: str, value: Any) -> Any:
    kind, low, high = _SPEC[key]
    where = f"{path}: key '{key}'"
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r} ({type(value).__name__})")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "int" and not isinstance(value, int)):
        want = "a whole number" if kind == "int" else "a number"
        raise ConfigError(f"{where} must be {want}, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where} must be {span}, got {value}")
    return float(value) if kind in ("share", "float") else int(value)


def policy_from_mapping(data: Mapping[str, Any], source: str = "policy") -> Policy:
    """Validate a parsed policy (flat keys) and fill the keys it leaves out with the defaults."""
    values = {}
    for key, value in data.items():
        if key not in _SPEC:
            near = difflib.get_close_matches(key, list(_SPEC), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(_SPEC)}"
            kind = "section" if isinstance(value, dict) else "key"
            raise ConfigError(f"{source}: unknown {kind} '{key}'{hint}")
        values[key] = _check(source, key, value)
    return Policy(**values, source=source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in `path`, or the shipped probes/policy.toml (built-in defaults if it is missing)."""
    if path is None:
        if not DEFAULT_POLICY.is_file():
            return Policy()
        path = DEFAULT_POLICY
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return policy_from_mapping(data, str(path))


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "passed": self.passed, "text": self.text}


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def judge(policy: Policy, audit: Mapping[str, Any]) -> tuple[str, list[str], list[Check]]:
    """Apply `policy` to an audit.json-shaped mapping: (verdict, reasons for failure, every check).

    Rules, each skipped when its figure is missing:
    - finite_answers (always on): no adapted answer may come from NaN or infinite logits;
    - fail_on_noop: the adapter must change something (sanity.noop false);
    - min_reliability / min_generalisation: the adapted mean P_greedy must reach the minimum;
    - max_negative_shift: the negative shift (point estimate) must not exceed the maximum;
    - max_refusal_change: |adapted − base| refusal rate must not exceed it, in either direction
      (fewer refusals = the model now bluffs on questions it used to decline, Pletenev et al.
      Table 4; more = it declines what it used to answer);
    - max_exploded_answers: the number of exploded answers must not exceed it;
    - max_benchmark_drop, per benchmark: FAIL when the point drop (base − adapted) exceeds the
      maximum AND the drop is significant, i.e. the whole 95 % interval of adapted − base lies
      below zero. A small benchmark's noise therefore never fails a gate on its own, while a real
      loss bigger than the budget always does.
    An update (audit.json has `update`: the candidate against the production adapter) keeps the
    first three rules (the candidate must be a working adapter) and judges harm against
    production, not the base model, since what production already broke is not the update's doing:
    - max_retention_loss: of the facts production answers, the share the candidate lost;
    - max_update_negative_shift, max_update_refusal_change, max_update_exploded_answers,
      max_update_benchmark_drop: the rules above with production in the base's place.
    """
    metrics = audit.get("metrics", {})
    update = audit.get("update")
    checks: list[Check] = []

    def add(rule: str, passed: bool, text: str) -> None:
        checks.append(Check(rule, passed, text))

    sanity = audit.get("sanity", {})
    if policy.fail_on_noop and sanity:
        noop = bool(sanity.get("noop"))
        why = (
            "all LoRA B matrices are zero"
            if sanity.get("lora_b_all_zero")
            else "its greedy answers equal the base model's on every injected fact"
        )
        add("fail_on_noop", not noop, f"the adapter is a no-op: {why}" if noop else "the adapter changes the model")

    if sanity.get("nonfinite_answers"):  # no policy can make answers from NaN logits acceptable
        add(
            "finite_answers",
            False,
            f"the adapter's logits were NaN or infinite for {sanity['nonfinite_answers']} adapted answers: "
            "its weights overflow the model (retrain with a lower --lr, or check adapter_model.safetensors)",
        )

    def limit(rule: str, value: float, bound: float, what: str, *, at_least: bool, fmt: str = ".3f") -> None:
        ok = value >= bound if at_least else value <= bound
        sign = (">=" if ok else "<") if at_least else ("<=" if ok else ">")
        add(rule, ok, f"{what} {sign} {rule} {bound:{fmt}}")

    rel = metrics.get("reliability", {})
    if rel.get("adapted") is not None:
        what = f"reliability {_f(rel['adapted'])} (base {_f(rel.get('base'))}, {rel.get('n')} injected facts)"
        limit("min_reliability", rel["adapted"], policy.min_reliability, what, at_least=True)
    gen = metrics.get("generalisation", {})
    if policy.min_generalisation > 0 and gen.get("adapted") is not None:
        what = f"generalisation {_f(gen['adapted'])} ({gen.get('n')} paraphrases)"
        limit("min_generalisation", gen["adapted"], policy.min_generalisation, what, at_least=True)
    verdicts, net = audit.get("judge") or {}, (audit.get("judge") or {}).get("net") or {}
    if policy.min_judge_net > -1 and verdicts.get("judged") and net.get("ci_high") is not None:
        what = (f"net pairwise wins of the adapter over {verdicts['arms'][1]} {_f(net['rate'])} (95% interval up to "
                f"{_f(net['ci_high'])}, {verdicts['judged']} prompts, judge {verdicts['judge']})")  # fmt: skip
        limit("min_judge_net", net["ci_high"], policy.min_judge_net, what, at_least=True)
    if update is None:
        _harm(policy, audit, "", "base", add, limit)
    else:
        loss = update.get("metrics", {}).get("retention_loss", {})
        if loss.get("adapted") is not None:
            lost, n = len(update.get("lost") or []), loss.get("n")
            what = (
                f"the candidate lost {lost} of the {n} facts the production adapter answers "
                f"(retention loss {_f(loss['adapted'])})"
            )
            limit("max_retention_loss", loss["adapted"], policy.max_retention_loss, what, at_least=False)
        _harm(policy, update, "update_", "production", add, limit)
    reasons = [c.text for c in checks if not c.passed]
    return ("FAIL" if reasons else "PASS"), reasons, checks


def _harm(policy: Policy, section: Mapping[str, Any], prefix: str, reference: str, add: Any, limit: Any) -> None:
    """The harm rules on one comparison: the plain audit's (reference "base", the max_* keys) or an
    update's (reference "production", the max_update_* keys)."""
    metrics = section.get("metrics", {})

    def key(name: str) -> str:
        return f"max_{prefix}{name}"

    against = "" if reference == "base" else " from production"
    neg = metrics.get("negative_shift", {})
    if neg.get("adapted") is not None:
        what = f"negative shift{against} {_f(neg['adapted'])} (of {neg.get('n')} HighlyKnown/MaybeKnown held-out facts)"
        limit(key("negative_shift"), neg["adapted"], getattr(policy, key("negative_shift")), what, at_least=False)
    ref = metrics.get("refusal_rate", {})
    if ref.get("delta") is not None:
        bound = getattr(policy, key("refusal_change"))
        ok = abs(ref["delta"]) <= bound
        add(
            key("refusal_change"),
            ok,
            f"refusal rate changed{against} by {ref['delta']:+.3f} ({_f(ref['base'])} -> "
            f"{_f(ref['adapted'])}) {'within' if ok else 'beyond'} {key('refusal_change')} {bound:.3f}",
        )
    exp = metrics.get("exploded_answers", {})
    if exp.get("adapted") is not None:
        n_exp = int(exp["adapted"])
        shown = ", ".join(
            f"'{e['answer']}' {e['base']} -> {e['adapted']} questions"
            for e in section.get("collapse", {}).get("exploded", [])[:3]
        )
        what = f"{n_exp} exploded answers{against}{f' ({shown})' if shown else ''}"
        limit(key("exploded_answers"), n_exp, getattr(policy, key("exploded_answers")), what, at_least=False, fmt="d")
    bound = getattr(policy, key("benchmark_drop"))
    for task, b in sorted(section.get("benchmarks", {}).items()):
        drop = b["base"] - b["adapted"]
        significant = b.get("ci_high") is not None and b["ci_high"] < 0
        ok = not (drop > bound and significant)
        add(
            f"{key('benchmark_drop')}:{task}",
            ok,
            f"benchmark {task}{against}: accuracy {_f(b['base'])} -> {_f(b['adapted'])} "
            f"(change {-drop:+.3f}, 95% CI [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}], p {b['p_value']:.3g}); "
            + ("a significant drop beyond" if not ok else "no significant drop beyond")
            + f" {key('benchmark_drop')} {bound:.3f}",
        )
