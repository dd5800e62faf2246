"""Judges: what gives a verdict on one pair of answers.

Every judge has a `name` (part of the cache key, so another judge never reuses a verdict) and
`ask_many(requests) -> [reply text or JudgeError]`, one entry per request, in order; a judge never
raises for one bad request, so nothing is lost. Three judges:
- `HttpJudge`: any OpenAI-compatible `/chat/completions` endpoint (`vllm serve` is one), through
  `urllib`, temperature 0; the key comes from an environment variable; every request has a timeout
  and a bounded number of retries (timeouts, connection errors, 429 and 5xx; backoff 0.5 s, 1 s,
  ...). Each request carries the verdict's JSON schema as `response_format` (json_schema), which a
  server with guided decoding enforces (vLLM does), so even a weak judge returns a parseable
  verdict. A server that refuses the request with it (HTTP 400/422) but takes it without is asked
  without it from then on, for the judge's lifetime; `constrained` says which happened and the
  summary reports it. A constrained reply cut at max_tokens is reported as such;
- `EngineJudge`: a local model through kia's engines (greedy, the model's chat template);
- `FactJudge`: no model: counts the reference facts whose answer each answer states (kia's
  `contains` match) and prefers the one with more, a tie when equal. A floor every LLM judge
  should beat, and a judge that runs anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kia.errors import JudgeError
from kia.judge.verdict import VERDICT_SCHEMA, judge_messages, parse_verdict


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


class _Rejected(JudgeError):
    """The server refused the request itself (HTTP 4xx other than 429): asking again cannot help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class HttpJudge:
    """An OpenAI-compatible chat endpoint: POST {url}/chat/completions, temperature 0, the verdict's
    JSON schema as `response_format` (dropped for good once the server refuses it)."""

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
        # True once the server answered under the schema, False once it refused `response_format`
        # (then never sent again), None while nothing was answered. The summary reports it.
        self.constrained: bool | None = None
        # The name (part of the cache key) names the schema kia asks for, not whether this server
        # honoured it: keys are computed before the first request, and a rerun must find the
        # verdicts it cached before it has asked anything. A server either takes `response_format`
        # or not, so one URL and model never mixes the two under one key; a changed schema changes
        # the name, so verdicts asked under another schema, or under none (older kia), are asked again.
        tag = hashlib.sha256(json.dumps(VERDICT_SCHEMA, sort_keys=True).encode()).hexdigest()[:8]
        self.name = f"http:{self.url}:{model}:schema-{tag}"

    def ask_many(self, requests: Sequence[JudgeRequest]) -> list[str | JudgeError]:
        out: list[str | JudgeError] = []
        for r in requests:
            try:
                out.append(self.ask(r.messages))
            except JudgeError as exc:
                out.append(exc)
        return out

    def ask(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply to `messages`. The messages are the same with and without the schema
        (its fields are the prompt's "Winner" and "Reason"), so the cache key does not depend on it."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        body["max_tokens"] = self.max_tokens
        if self.constrained is not False:
            body["response_format"] = RESPONSE_FORMAT
        try:
            text, finish = self._post(body)
        except _Rejected as exc:
            # 400 is what vLLM and OpenAI send for a field they do not take, 422 what a bare
            # FastAPI/pydantic server sends; a refused key (401/403) is not about the schema
            if exc.status not in (400, 422) or "response_format" not in body:
                raise
            # A server without guided decoding (or an older API) refuses the unknown field: ask
            # once more without it. Only when that succeeds was the schema the cause; a request
            # refused either way (e.g. a prompt longer than the model's context) changes nothing.
            del body["response_format"]
            text, _ = self._post(body)
            self.constrained = False
            return text
        if "response_format" in body:
            self.constrained = True  # the server took the schema, whether or not this reply is whole
            if finish == "length":
                _check_complete(text, self.url, self.max_tokens)
        return text

    def _post(self, body: dict[str, Any]) -> tuple[str, str | None]:
        """(the reply's text, its finish_reason), with the bounded retries; `_Rejected` for a 4xx."""
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
                last = f"HTTP {exc.code}{_detail(exc)}"
                if exc.code != 429 and exc.code < 500:  # a bad request or key: asking again cannot help
                    raise _Rejected(
                        f"{self.url}: no answer after {attempt + 1} attempt(s) ({last})", exc.code
                    ) from None
                continue
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                choice = json.loads(raw)["choices"][0]
                text = str(choice["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"not an OpenAI chat response: {raw[:80]!r}"
                continue
            return text, choice.get("finish_reason")
        raise JudgeError(f"{self.url}: no answer after {attempt + 1} attempt(s) ({last})")


RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}}


def _detail(exc: urllib.error.HTTPError) -> str:
    """': <the server's error message>' on one line, short, or '' (the reason a request was refused)."""
    try:
        raw = exc.read()[:2000].decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    try:
        obj = json.loads(raw)
        message = obj.get("error", obj) if isinstance(obj, dict) else obj
        message = message.get("message", message) if isinstance(message, dict) else message
    except ValueError:
        message = raw
    text = " ".join(str(message).split())
    return f": {text[:160]}" if text else ""


def _check_complete(text: str, url: str, max_tokens: int) -> None:
    """A constrained reply cut at max_tokens is unfinished JSON: a clear error instead of "not a
    verdict". Asking again at temperature 0 gives the same cut, so this is not worth a retry."""
    try:
        parse_verdict(text)
    except JudgeError:
        padded = not text.strip().strip("{").strip()
        hint = (
            ": the JSON was padded with whitespace (vLLM: serve with --structured-outputs-config "
            '\'{"backend": "xgrammar", "disable_any_whitespace": true}\')'
            if padded
            else ""
        )
        raise JudgeError(f"{url}: the JSON verdict was cut at max_tokens={max_tokens}{hint}") from None


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
