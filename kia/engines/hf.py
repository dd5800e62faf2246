"""The transformers engine: batched, left-padded, length-sorted generation on CPU or GPU.

Two things make it fast on short answers: each row stops at its first newline (most answers are a
few tokens, not `max_new_tokens`), and for sampling the prompt is prefilled once and its key/value
cache copied to the `n` samples instead of being recomputed `n` times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kia.engines import EngineConfig, Prompt, Sampling
from kia.errors import AdapterError, EngineError


def _seed_for(seed: int, batch_texts: Sequence[str]) -> int:
    """A batch's sampling seed depends on the run seed and the batch's prompts only, so a resumed
    run draws the same samples as an uninterrupted one."""
    h = hashlib.sha256(str(seed).encode())
    for t in batch_texts:
        h.update(t.encode())
    return int.from_bytes(h.digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF


class HFEngine:
    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str = "model", batch_size: int = 64):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.has_adapter = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._pad = tokenizer.pad_token_id
        self._stop_cache: dict[tuple[str, ...], Any] = {}
        self._torch = torch

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: EngineConfig) -> HFEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs: dict[str, Any] = {}
        if config.quant == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            )
            kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
        else:
            kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
        except OSError as exc:
            raise EngineError(f"cannot load model '{config.model}': {exc}") from exc
        if config.quant == "none":
            model.to(device)
        if config.adapter:
            model = attach_adapter(model, config.adapter, allow_pickle=config.allow_pickle)
        model.eval()
        return cls(model, tokenizer, model_id=config.model, batch_size=config.batch_size)

    # ------------------------------------------------------------------ prompts
    def chat(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    @property
    def bos(self) -> str:
        return self.tokenizer.bos_token or ""

    def close(self) -> None:
        self.model = None

    # ------------------------------------------------------------------ generation
    def _encode(self, prompts: Sequence[Prompt | str]) -> list[tuple[tuple[int, ...], list[int]]]:
        """(prefix ids, suffix ids) per prompt; each distinct prefix is tokenised once."""
        out = []
        prefix_ids: dict[str, tuple[int, ...]] = {}
        for p in prompts:
            if isinstance(p, str):
                p = Prompt("", p)
            if p.prefix not in prefix_ids:
                ids = self.tokenizer(p.prefix, add_special_tokens=False).input_ids if p.prefix else []
                prefix_ids[p.prefix] = tuple(ids)
            out.append((prefix_ids[p.prefix], self.tokenizer(p.suffix, add_special_tokens=False).input_ids))
        return out

    def _stop_ids(self, stops: tuple[str, ...]) -> Any:
        """Token ids whose text contains a stop string: a row ends once it emits one."""
        if stops not in self._stop_cache:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            ids = [
                i
                for i, tok in enumerate(vocab)
                if tok is not None and any(s in self.tokenizer.convert_tokens_to_string([tok]) for s in stops)
            ]
            self._stop_cache[stops] = self._torch.tensor(ids, dtype=self._torch.long, device=self.device)
        return self._stop_cache[stops]

    def generate(
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool = False
    ) -> list[list[str]]:
        if adapter and not self.has_adapter:
            raise EngineError("generation through an adapter was asked for, but no adapter is loaded")
        if not prompts:
            return []
        encoded = self._encode(prompts)
        # Prompts sharing a prefix go together (its cache is computed once per batch); within a
        # group, sorting by length keeps padding small.
        order = sorted(range(len(encoded)), key=lambda i: (encoded[i][0], len(encoded[i][1]), i))
        per_batch = max(1, self.batch_size // sampling.n)
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < per_batch and encoded[batches[-1][0]][0] == encoded[i][0]:
                batches[-1].append(i)
            else:
                batches.append([i])
        results: list[list[str]] = [[] for _ in prompts]
        with self._adapter_context(adapter):
            for idx in batches:
                texts = [prompts[i].text if isinstance(prompts[i], Prompt) else prompts[i] for i in idx]
                prefix = list(encoded[idx[0]][0])
                outs = self._generate_batch(
                    prefix, [encoded[i][1] for i in idx], sampling, _seed_for(sampling.seed, texts)
                )
                for j, i in enumerate(idx):
                    results[i] = outs[j * sampling.n : (j + 1) * sampling.n]
        return results

    def greedy_if(
        self, prompts: Sequence[Prompt | str], expected: Sequence[str], sampling: Sampling, *, adapter: bool = False
    ) -> list[str | None]:
        """For each prompt, the greedy completion when it is `expected` (then a stop or the end of
        sequence), checked in one teacher-forced forward pass instead of decoding token by token;
        None when greedy decoding would write something else, or when a step is too close to call
        (then generate it).

        Greedy decoding emits the argmax at every step, so it writes `expected` exactly when each of
        its tokens is the argmax given the ones before: teacher-forced logits show all steps at
        once. A top-two margin under `_TIE` at any step gives None, since batched and step-by-step
        passes may round a near-tie differently. As in `generate`, prompts sharing a few-shot
        prefix are batched together over its KV cache, computed once per batch."""
        torch = self._torch
        if adapter and not self.has_adapter:
            raise EngineError("generation through an adapter was asked for, but no adapter is loaded")
        results: list[str | None] = [None] * len(prompts)
        if not sampling.greedy or not sampling.stop:
            return results
        stop_ids = set(self._stop_ids(sampling.stop).tolist())
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        ends = stop_ids | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        rows: list[tuple[tuple[int, ...], list[int], int, int]] = []  # prefix, suffix + continuation, n cont, index
        for i, ((prefix, suffix), text) in enumerate(zip(self._encode(prompts), expected, strict=True)):
            p = prompts[i] if isinstance(prompts[i], Prompt) else Prompt("", prompts[i])
            joined = self.tokenizer(p.suffix + text + sampling.stop[0], add_special_tokens=False).input_ids
            if joined[: len(suffix)] != suffix:
                continue  # the answer merges with the prompt's last token: let generation decide
            end = next((k for k, t in enumerate(joined[len(suffix) :]) if t in stop_ids), None)
            if end is None or end + 1 > sampling.max_new_tokens:
                continue
            rows.append((prefix, joined[: len(suffix) + end + 1], end + 1, i))
        rows.sort(key=lambda r: (r[0], len(r[1])))
        batches: list[list[tuple[tuple[int, ...], list[int], int, int]]] = []
        for row in rows:
            if batches and len(batches[-1]) < self.batch_size and batches[-1][0][0] == row[0]:
                batches[-1].append(row)
            else:
                batches.append([row])
        tie = _TIE if next(self.model.parameters()).dtype == torch.float32 else 100 * _TIE
        with self._adapter_context(adapter), torch.inference_mode():
            for batch in batches:
                prefix = list(batch[0][0])
                width, keep = max(len(r[1]) for r in batch), max(r[2] for r in batch) + 1
                ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
                mask = torch.ones((len(batch), len(prefix) + width), dtype=torch.long)
                for r, (_, seq, _, _) in enumerate(batch):  # left padding: every continuation ends its row
                    ids[r, width - len(seq) :] = torch.tensor(seq)
                    mask[r, len(prefix) : len(prefix) + width - len(seq)] = 0
                cache = None
                if prefix:
                    pre = torch.tensor([prefix], dtype=torch.long, device=self.device)
                    cache = self.model(input_ids=pre, use_cache=True).past_key_values
                    cache.batch_repeat_interleave(len(batch))
                positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(prefix) :]
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=keep,
                ).logits.float()
                top = logits.topk(2, dim=-1)
                for r, (_, seq, n, i) in enumerate(batch):
                    steps = slice(keep - 1 - n, keep - 1)  # the logits that predict the continuation
                    best, values = top.indices[r, steps, 0].tolist(), top.values[r, steps]
                    # the last step may end the answer with any stop token, or the end of sequence
                    sure = bool(((values[:, 0] - values[:, 1]) > tie).all())
                    if sure and best[:-1] == seq[len(seq) - n : -1] and best[-1] in ends:
                        results[i] = _cut(self.tokenizer.decode(best, skip_special_tokens=True), sampling.stop)
        return results

    def _adapter_context(self, adapter: bool) -> Any:
        import contextlib

        if self.has_adapter and not adapter:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _generate_batch(self, prefix: list[int], suffixes: list[list[int]], sampling: Sampling, seed: int) -> list[str]:
        """Generate for prompts `prefix + suffix`.

        The shared prefix is run once and its keys and values copied to every row; for sampling,
        each prompt is prefilled once and its cache copied to its `n` samples. Suffixes are
        left-padded after the prefix; the attention mask and the position ids skip the padding,
        so each row computes exactly what it would alone.
        """
        torch = self._torch
        n, batch = sampling.n, len(suffixes)
        width = max(len(ids) for ids in suffixes)
        suffix_ids = torch.full((batch, width), self._pad, dtype=torch.long)
        suffix_mask = torch.zeros((batch, width), dtype=torch.long)
        for r, ids in enumerate(suffixes):
            suffix_ids[r, width - len(ids) :] = torch.tensor(ids)
            suffix_mask[r, width - len(ids) :] = 1
        pre = torch.tensor([prefix], dtype=torch.long).reshape(1, len(prefix))
        input_ids = torch.cat([pre.expand(batch, -1), suffix_ids], dim=1).to(self.device)
        mask = torch.cat([torch.ones_like(pre).expand(batch, -1), suffix_mask], dim=1).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self._pad,
            "stopping_criteria": _stopping(self._stop_ids(sampling.stop)),
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, num_beams=1, temperature=None, top_k=None, top_p=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=1.0)
        with torch.inference_mode():
            cache = None
            if prefix:
                cache = self.model(input_ids=input_ids[:1, : len(prefix)], use_cache=True).past_key_values
                cache.batch_repeat_interleave(batch)
            if n > 1 and width > 1:
                upto = input_ids.shape[1] - 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                cache = self.model(
                    input_ids=input_ids[:, len(prefix) : upto],
                    attention_mask=mask[:, :upto],
                    position_ids=positions[:, len(prefix) : upto],
                    past_key_values=cache,
                    use_cache=True,
                ).past_key_values
            if n > 1:
                input_ids = input_ids.repeat_interleave(n, dim=0)
                mask = mask.repeat_interleave(n, dim=0)
                if cache is not None:
                    cache.batch_repeat_interleave(n)
            if cache is not None:
                kwargs["past_key_values"] = cache
            torch.manual_seed(seed)
            generated = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        new = generated[:, input_ids.shape[1] :].tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [_cut(t, sampling.stop) for t in texts]


_TIE = 1e-3  # logit margin under which a greedy step is too close to call from a batched pass


def _cut(text: str, stops: tuple[str, ...]) -> str:
    for s in stops:
        pos = text.find(s)
        if pos != -1:
            text = text[:pos]
    return text


def _stopping(stop_ids: Any) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnTokens(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.isin(input_ids[:, -1], stop_ids)

    return StoppingCriteriaList([StopOnTokens()])


def attach_adapter(model: Any, adapter: str | Path, *, allow_pickle: bool = False, is_trainable: bool = False) -> Any:
    """Wrap `model` with a peft adapter after checking that it is safe and made for this model."""
    from kia.adapters import check_adapter

    check_adapter(adapter, model, allow_pickle=allow_pickle)
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    except Exception as exc:  # peft raises many kinds; the user needs the path and the reason
        raise AdapterError(f"cannot load adapter {adapter}: {exc}") from exc
