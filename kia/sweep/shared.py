"""What the sweep's audits share: one loaded base model, its greedy answers, its benchmark scores.

- `AuditEngine`: the base model is loaded once per process; each point's adapter is attached
  for its audit and taken off afterwards (peft `unload`: the LoRA layers go, the base weights are
  never touched), as `kia audit` would load base + adapter.
- `BaseArmCache`: an engine wrapper that memoizes generations with the adapter off, greedy only
  (temperature 0 is deterministic; a sampled generation is never cached, as lm-eval's `CachingLM`
  never caches sampled ones). The key is the whole call: the engine, model, batch size, sampling
  and every prompt in order. A call is answered from the cache only when it is the very call made
  before, so the answers are the ones the engine would compute (batches, and so any near-tie, are
  the same), and every point's audit is the audit it would be alone. What repeats across points
  is the held-out split (one for the whole sweep) and, across recipes at the same N and seed, the
  injected facts and their held-back paraphrases.
- `ScoreStore`: the benchmarks' base-arm scores per document, under
  `kia.audit.benchmarks.base_key`, for `audit(..., base_benchmarks=...)`.
All three persist under the sweep folder's shared/, so a resumed sweep keeps them too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kia.engines import Engine, Prompt, Sampling


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40] + ".json"


class BaseArmCache:
    """An engine whose greedy adapter-off calls are answered from `folder` when made before."""

    def __init__(self, inner: Engine, folder: Path, identity: dict[str, Any]):
        self.inner = inner
        self.folder = folder
        self.identity = identity  # what else the answers depend on: model, quantisation, batch size
        self.memory: dict[str, list[list[str]]] = {}
        self.hits = 0  # prompts answered from the cache
        self.misses = 0  # prompts generated

    def __getattr__(self, name: str) -> Any:  # name, model_id, has_adapter, model, tokenizer, chat, ...
        return getattr(self.inner, name)

    def _key(self, prompts: Sequence[Prompt | str], sampling: Sampling) -> str:
        texts = [[p.prefix, p.suffix] if isinstance(p, Prompt) else ["", p] for p in prompts]
        return json.dumps({"engine": self.identity, "sampling": asdict(sampling), "prompts": texts}, sort_keys=True)

    def generate(
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool = False
    ) -> list[list[str]]:
        if adapter or not sampling.greedy or not prompts:
            return self.inner.generate(prompts, sampling, adapter=adapter)
        from kia.artifacts import read_json, write_json

        key = self._key(prompts, sampling)
        path = self.folder / _name(key)
        if key not in self.memory and path.exists():
            stored = read_json(path)
            if stored.get("key") == key:
                self.memory[key] = stored["answers"]
        if key in self.memory:
            self.hits += len(prompts)
            return [list(a) for a in self.memory[key]]
        answers = self.inner.generate(prompts, sampling, adapter=False)
        self.misses += len(prompts)
        self.memory[key] = answers
        write_json(path, {"key": key, "answers": answers})
        return [list(a) for a in answers]


class ScoreStore(MutableMapping[str, Any]):
    """{base_key: {task: {(leaf task, doc id): score}}} kept as JSON files in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.reused = 0  # lookups answered

    def __getitem__(self, key: str) -> dict[str, dict[tuple[str, int], float]]:
        from kia.artifacts import read_json

        path = self.folder / _name(key)
        if not path.exists():
            raise KeyError(key)
        stored = read_json(path)
        if stored.get("key") != key:
            raise KeyError(key)
        self.reused += 1
        return {task: {(leaf, int(doc)): float(v) for leaf, doc, v in rows} for task, rows in stored["scores"].items()}

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not (self.folder / _name(key)).exists():
            return False
        from kia.artifacts import read_json

        return read_json(self.folder / _name(key)).get("key") == key

    def __setitem__(self, key: str, scores: dict[str, dict[tuple[str, int], float]]) -> None:
        from kia.artifacts import write_json

        rows = {task: [[leaf, doc, v] for (leaf, doc), v in sorted(s.items())] for task, s in scores.items()}
        write_json(self.folder / _name(key), {"key": key, "scores": rows})

    def __delitem__(self, key: str) -> None:
        (self.folder / _name(key)).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        from kia.artifacts import read_json

        return iter(read_json(p)["key"] for p in sorted(self.folder.glob("*.json")))

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.json")))


class AuditEngine:
    """The base model, loaded once, that every point's audit runs on with that point's adapter."""

    def __init__(self, model_id: str, quant: str, batch_size: int, cache_dir: Path):
        import torch

        from kia.engines.hf import HFEngine, load_pretrained

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.base, tokenizer = load_pretrained(model_id, quant, device)
        self.base.eval()
        self.engine = HFEngine(self.base, tokenizer, model_id=model_id, batch_size=batch_size)
        identity = {"engine": "hf", "model": model_id, "quant": quant, "batch_size": batch_size}
        self.cached = BaseArmCache(self.engine, cache_dir, identity)

    @contextlib.contextmanager
    def attached(self, adapter: Path, *, allow_pickle: bool = False) -> Iterator[BaseArmCache]:
        """The engine with `adapter` on (checked as `kia audit` checks it), taken off on the way out."""
        from kia.engines.hf import attach_adapter

        model = attach_adapter(self.base, adapter, allow_pickle=allow_pickle).eval()
        # The engine's model and adapter flag are swapped in place: its stop-token table and
        # prefix handling depend on the tokenizer and the base model only.
        self.engine.model, self.engine.has_adapter = model, True
        try:
            yield self.cached
        finally:
            self.base = model.unload()  # the LoRA layers removed, the base model's own modules back
            self.engine.model, self.engine.has_adapter = self.base, False
