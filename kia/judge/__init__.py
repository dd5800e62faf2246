"""Pairwise judging of free-form answers: two arms' answers to the open prompts (eval_open.jsonl),
compared by a judge on accuracy against the facts a good answer states, in both orders.

- `verdict`: the judge's prompt and the parsing of its reply;
- `judges`: `HttpJudge` (OpenAI-compatible endpoint), `EngineJudge` (a local model through kia's
  engines), `FactJudge` (counts the reference facts stated; no model);
- `pairwise`: `judge_pairs` (both orders, cache, failures kept, win/tie/loss with intervals);
- `answers`: `open_answers`, one arm's free-form answers through an engine, and `pairs_from`.
"""

from kia.judge.answers import open_answers, pairs_from
from kia.judge.judges import EngineJudge, FactJudge, HttpJudge, Judge, JudgeRequest
from kia.judge.pairwise import JudgmentCache, Pair, judge_pairs, rate
from kia.judge.verdict import Verdict, judge_messages, parse_verdict

__all__ = [
    "EngineJudge",
    "FactJudge",
    "HttpJudge",
    "Judge",
    "JudgeRequest",
    "JudgmentCache",
    "Pair",
    "Verdict",
    "judge_messages",
    "judge_pairs",
    "open_answers",
    "pairs_from",
    "parse_verdict",
    "rate",
]
