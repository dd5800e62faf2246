"""Pairwise judging of two arms' free-form answers, both orders, cached, with bootstrap intervals.

For each open prompt the judge sees the two arms' answers twice: arm X as A and arm Y as B, then
swapped. A position-biased judge (one that prefers whatever comes first) then contradicts itself,
and a pair whose two verdicts disagree once mapped back to the arms counts as a tie: position bias
cancels instead of deciding the pair (Zheng et al. 2023, "Judging LLM-as-a-judge"; the pairwise
protocol of Dettmers et al. / the QLoRA interview study, which preferred it to numeric ratings).

Per pair, from arm X's side: outcome o = +1 (win), 0 (tie), -1 (loss) when both orders were
judged; None when either failed. Reported: win, tie and loss rates (shares of the judged pairs with
o = +1, 0, -1) and net = win - loss, each with a 95 % BCa bootstrap interval over pairs
(`scipy.stats.bootstrap`, as kia.audit.stats; resampling pairs keeps each pair's two verdicts
together); consistency = share of judged pairs whose two verdicts agree (1 for a judge without
position bias; a judge at 0.5 decides little); first_position = share of decisive single verdicts
that picked answer A (0.5 without position bias); None where nothing was judged. Failed judgments
are listed with their error and counted, never dropped.

Verdicts are cached in the run folder (judgments.jsonl), keyed by sha256 of (judge name, the
judge's messages: prompt, facts and both answers in their order), so a rerun asks nothing it
already has; failed judgments are not cached, so a rerun asks them again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kia.errors import JudgeError
from kia.judge.judges import Judge, JudgeRequest
from kia.judge.verdict import Verdict, parse_verdict
from kia.stats import mean_interval


@dataclass(frozen=True)
class Pair:
    id: str
    prompt: str
    facts: tuple[Mapping[str, Any], ...]
    x: str  # arm X's answer (the adapted or candidate arm)
    y: str  # arm Y's answer (the base or production arm)


class JudgmentCache:
    """judgments.jsonl: one {"key", "judge", "winner", "reason"} per line, appended as judged."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, Verdict] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = Verdict(row["winner"], row["reason"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: that judgment is asked again

    @staticmethod
    def key(judge: Judge, request: JudgeRequest) -> str:
        return hashlib.sha256(json.dumps([judge.name, request.messages], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Verdict | None:
        return self.entries.get(key)

    def put(self, key: str, judge: Judge, verdict: Verdict) -> None:
        self.entries[key] = verdict
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            row = {"key": key, "judge": judge.name, "winner": verdict.winner, "reason": verdict.reason}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def _ask(judge: Judge, requests: list[JudgeRequest], attempts: int) -> list[Verdict | JudgeError]:
    """Verdicts for `requests`; a reply that is not a verdict is asked again (up to `attempts` in
    all) unless the judge is deterministic."""
    out: list[Verdict | JudgeError] = [JudgeError("not asked")] * len(requests)
    todo = list(range(len(requests)))
    for _ in range(1 if judge.deterministic else max(attempts, 1)):
        replies = judge.ask_many([requests[i] for i in todo])
        again = []
        for i, reply in zip(todo, replies, strict=True):
            try:
                out[i] = parse_verdict(reply) if isinstance(reply, str) else reply
            except JudgeError as exc:
                out[i] = exc
            if isinstance(out[i], JudgeError) and isinstance(reply, str):
                again.append(i)  # garbage: worth another try; a transport failure was retried already
        todo = again
        if not todo:
            break
    return out


def judge_pairs(
    pairs: Sequence[Pair],
    judge: Judge,
    *,
    cache: Path | None = None,
    arms: tuple[str, str] = ("adapted", "base"),
    attempts: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
    examples: int = 5,
    criterion: str = "accuracy",
    style_examples: Sequence[Mapping[str, str]] = (),
    groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Judge every pair in both orders on `criterion` ("accuracy" against the pair's facts, or
    "style" against `style_examples`, question/answer pairs of the training split); the summary
    described in the module docstring. `groups` (name -> indices into `pairs`) adds a summary per
    group under its name, from the same verdicts: a failed judgment is asked once, not once more
    per group (failures are not cached)."""
    store = JudgmentCache(cache)
    shown = tuple(style_examples) if criterion == "style" else ()
    requests = []
    for p in pairs:
        requests += [JudgeRequest(p.prompt, p.facts, p.x, p.y, criterion, shown),
                     JudgeRequest(p.prompt, p.facts, p.y, p.x, criterion, shown)]  # fmt: skip
    keys = [JudgmentCache.key(judge, r) for r in requests]
    verdicts: list[Verdict | JudgeError | None] = [store.get(k) for k in keys]
    hit = [v is not None for v in verdicts]
    missing = [i for i, v in enumerate(verdicts) if v is None]
    for i, v in zip(missing, _ask(judge, [requests[i] for i in missing], attempts), strict=True):
        verdicts[i] = v
        if isinstance(v, Verdict):
            store.put(keys[i], judge, v)
    rows, failed = [], []
    for n, p in enumerate(pairs):
        first, second = verdicts[2 * n], verdicts[2 * n + 1]
        errors = [(o, v) for o, v in (("x_first", first), ("y_first", second)) if isinstance(v, JudgeError)]
        failed.append([{"id": p.id, "order": o, "error": str(e)} for o, e in errors])
        if errors:
            rows.append({"id": p.id, "outcome": None})
            continue
        assert isinstance(first, Verdict) and isinstance(second, Verdict)
        o1 = {"A": 1, "B": -1, "tie": 0}[first.winner]  # X was A
        o2 = {"A": -1, "B": 1, "tie": 0}[second.winner]  # X was B
        rows.append({"id": p.id, "outcome": o1 if o1 == o2 else 0, "consistent": o1 == o2,
                     "verdicts": [first.winner, second.winner], "reasons": [first.reason, second.reason]})  # fmt: skip

    def summarize(chosen: Sequence[int], shown_examples: int) -> dict[str, Any]:
        judged = [rows[i] for i in chosen if rows[i]["outcome"] is not None]
        outcomes = np.array([r["outcome"] for r in judged], dtype=float)
        singles = [w for r in judged for w in r["verdicts"] if w != "tie"]
        hits = sum(hit[2 * i] + hit[2 * i + 1] for i in chosen)
        return {
            "judge": judge.name,
            "criterion": criterion,
            "arms": list(arms),
            "pairs": len(chosen),
            "judged": len(judged),
            "failed": [f for i in chosen for f in failed[i]],
            "win": rate(outcomes == 1, n_boot=n_boot, seed=seed),
            "tie": rate(outcomes == 0, n_boot=n_boot, seed=seed),
            "loss": rate(outcomes == -1, n_boot=n_boot, seed=seed),
            "net": rate(outcomes, n_boot=n_boot, seed=seed),
            "consistency": sum(r["consistent"] for r in judged) / len(judged) if judged else None,
            "first_position": sum(w == "A" for w in singles) / len(singles) if singles else None,
            "cache": {"hits": hits, "misses": 2 * len(chosen) - hits},
            # an HTTP judge: True when the server constrained the verdicts to the JSON schema, False
            # when it refused the schema; None for other judges and when nothing was asked (all cached)
            "constrained": getattr(judge, "constrained", None),
            "examples": [
                {**rows[i], "prompt": pairs[i].prompt, arms[0]: pairs[i].x, arms[1]: pairs[i].y}
                for i in chosen
                if rows[i]["outcome"] is not None
            ][:shown_examples],  # fmt: skip
        }

    summary = summarize(range(len(pairs)), examples)
    for name, chosen in (groups or {}).items():
        summary[name] = summarize(list(chosen), 0)
    return summary


def rate(values: Any, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float | None]:
    """Mean of `values` (0/1 indicators: a rate) with a 95 % BCa bootstrap interval over items;
    the point itself when every value is equal (BCa is undefined there), None for no items (audit.json
    holds no NaN: a judge that failed everywhere leaves no rate, not a broken file)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"rate": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(v.mean())
    if np.ptp(v) == 0:
        return {"rate": mean, "ci_low": mean, "ci_high": mean, "n": int(v.size)}
    low, high = mean_interval(v, n_boot=n_boot, seed=seed)
    return {"rate": mean, "ci_low": low, "ci_high": high, "n": int(v.size)}
