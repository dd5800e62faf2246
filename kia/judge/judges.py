"""Judges: what gives a verdict on one pair of answers.

Every judge has a `name` (part of the cache key, so another judge never reuses a verdict) and
`ask_many(requests) -> [reply text or JudgeError]`, one entry per request, in order; a judge never
raises for one bad request, so nothing is lost. Three judges:
- `HttpJudge`: any OpenAI-compatible `/chat/completions` endpoint (`vllm serve` is one), through
  `urllib`; the key comes from an environment variable; every request has a timeout and a bounded
  number of retries (timeouts, connection errors, 429 and 5xx; backoff 0.5 s, 1 s, ...);
- `EngineJudge`: a local model through kia's engines (greedy, the model's chat template);
- `FactJudge`: no model: counts the reference facts whose answer each answer states (kia's
  `contains` match) and prefers the one with more, a tie when equal. A floor every LLM judge
  should beat, and a judge that runs anywhere.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kia.errors import JudgeError
from kia.judge.verdict import judge_messages


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    facts: tuple[Mapping[str, Any], ...]  # {"question", "answer"} each
    first: str  # shown as answer A
    second: str  # shown as answer B
    criterion: str = "accuracy"  # or "style" (kia.judge.verdict)
    examples: tuple[Mapping[str, str], ...] = ()  # training answers, the style criterion's reference

    @property
    def messages(self) -> list[dict[str, str]]:
        return judge_messages(
            self.prompt, self.facts, self.first, self.second, criterion=self.criterion, examples=self.examples
        )


class Judge(Protocol):
    name: str
    deterministic: bool  # True: asking again gives the same reply, so a garbage reply is not retried

    def ask_many(self, requests: Sequence[JudgeRequest]) -> list[str | JudgeError]: ...


class HttpJudge:
    """An OpenAI-compatible chat endpoint: POST {url}/chat/completions, temperature 0."""

    deterministic = False

    def __init__(
        self,
        url: str,
        model: str,
        *,
        key_env: str = "KIA_JUDGE_API_KEY",
        timeout: float = 60.0,
        retries: int = 2,
        max_tokens: int = 200,
    ):
        if not url.startswith(("http://", "https://")):
            raise JudgeError(f"--judge-url must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.timeout, self.retries, self.max_tokens = model, timeout, retries, max_tokens
        self.key = os.environ.get(key_env)
        self.name = f"http:{self.url}:{model}"

    def ask_many(self, requests: Sequence[JudgeRequest]) -> list[str | JudgeError]:
        out: list[str | JudgeError] = []
        for r in requests:
            try:
                out.append(self.ask(r.messages))
            except JudgeError as exc:
                out.append(exc)
        return out

    def ask(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    break  # a bad request or key: asking again cannot help
                continue
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                return str(json.loads(raw)["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"not an OpenAI chat response: {raw[:80]!r}"
        raise JudgeError(f"{self.url}: no answer after {attempt + 1} attempt(s) ({last})")


class EngineJudge:
    """A local model through a kia engine (`kia.engines.load_engine`), greedy, one batch."""

    deterministic = True

    def __init__(self, engine: Any, *, max_new_tokens: int = 96):
        self.engine, self.max_new_tokens = engine, max_new_tokens
        self.name = f"engine:{engine.name}:{engine.model_id}"

    def ask_many(self, requests: Sequence[JudgeRequest]) -> list[str | JudgeError]:
        from kia.engines import Sampling

        prompts = []
        for r in requests:
            msgs = r.messages
            rendered = self.engine.chat(msgs)
            prompts.append(rendered if rendered is not None else "\n\n".join(m["content"] for m in msgs) + "\n")
        sampling = Sampling(max_new_tokens=self.max_new_tokens, stop=())
        try:
            replies = self.engine.generate(prompts, sampling)
        except Exception as exc:  # the engine failed for the batch: every judgment fails, none is lost
            return [JudgeError(f"{self.name}: {exc}") for _ in requests]
        return [r[0] for r in replies]


class FactJudge:
    """More reference facts stated wins: count_A = #{facts whose answer `contains`-matches answer A}."""

    name = "facts"
    deterministic = True

    def ask_many(self, requests: Sequence[JudgeRequest]) -> list[str | JudgeError]:
        from kia.facts import is_correct

        out: list[str | JudgeError] = []
        for r in requests:
            if r.criterion != "accuracy":
                out.append(JudgeError(f"the facts judge counts facts; it cannot judge {r.criterion}"))
                continue
            a = sum(is_correct(r.first, [str(f["answer"])]) for f in r.facts)
            b = sum(is_correct(r.second, [str(f["answer"])]) for f in r.facts)
            winner = "A" if a > b else "B" if b > a else "tie"
            out.append(f"Winner: {winner}\nReason: A states {a}, B states {b} of {len(r.facts)} reference facts")
        return out
