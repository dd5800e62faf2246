"""The transformers engine: batched, left-padded, length-sorted generation on CPU or GPU.

What makes it fast on short answers: each row stops at its first newline (most answers are a few
tokens, not `max_new_tokens`); each distinct few-shot prefix of a batch is run once and its
key/value cache shared by its rows; a batch may mix prefixes (left-padded into one pass), so a few
prompts for each of many relations and exemplar sets still decode together, in one loop of forward
passes rather than one per prefix; and for sampling the prompt is prefilled once and its cache
copied to the `n` samples instead of being recomputed `n` times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kia.engines.interface import EngineConfig, Prompt, Sampling
from kia.errors import AdapterError, EngineError


def _seed_for(seed: int, batch_texts: Sequence[str]) -> int:
    """A batch's sampling seed depends on the run seed and the batch's prompts only, so a resumed
    run draws the same samples as an uninterrupted one."""
    h = hashlib.sha256(str(seed).encode())
    for t in batch_texts:
        h.update(t.encode())
    return int.from_bytes(h.digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF


def load_pretrained(
    model_id: str, quant: str, device: str, compute_dtype: Any = None, gpu_index: int = 0
) -> tuple[Any, Any]:
    """Model and tokenizer from a hub id or a local folder, for the engine and for training alike.

    `quant` "nf4": 4-bit NF4 with double quantisation, computing in `compute_dtype` (default: bf16
    on a GPU, fp32 on the CPU); "none": bf16 weights on a GPU, fp32 on the CPU. `device` is "cuda"
    or "cpu"; on "cuda" the model goes to GPU `gpu_index`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {}
    if quant == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or (torch.bfloat16 if device == "cuda" else torch.float32),
        )
        kwargs["device_map"] = {"": gpu_index if device == "cuda" else "cpu"}
    else:
        kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except OSError as exc:
        raise EngineError(f"cannot load model '{model_id}': {exc}") from exc
    if quant == "none":
        model.to(f"cuda:{gpu_index}" if device == "cuda" else "cpu")
    return model, tokenizer


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
        # Passes that only fill the key/value cache need no logits: asking for the last position's
        # only saves the vocabulary projection of every prefix token (GBs for a long few-shot
        # prefix and a 150k vocabulary).
        self._cache_only = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._config = getattr(base, "config", None)
        # Sequences generated, and those whose logits were ever NaN or infinite, per arm (adapter
        # off / on / a named adapter): an adapter whose finite weights overflow the model answers
        # from garbage, and the audit fails it for that rather than for the garbage.
        self.generated: dict[bool | str, int] = {False: 0, True: 0}
        self.nonfinite: dict[bool | str, int] = {False: 0, True: 0}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: EngineConfig) -> HFEngine:
        import torch

        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer = load_pretrained(config.model, config.quant, device)
        if config.adapter:
            model = attach_adapter(model, config.adapter, allow_pickle=config.allow_pickle)
            for name, path in config.adapters:
                attach_named_adapter(model, name, path, allow_pickle=config.allow_pickle)
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
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool | str = False
    ) -> list[list[str]]:
        if adapter and not self.has_adapter:
            raise EngineError("generation through an adapter was asked for, but no adapter is loaded")
        if not prompts:
            return []
        encoded = self._encode(prompts)
        # Prompts sharing a prefix sit next to each other (each distinct prefix of a batch is run
        # once); within a prefix, sorting by length keeps padding small. A batch may span several
        # prefixes: with few prompts per prefix (a training curve, a small audit) that saves far
        # more forward passes than the padded prefixes cost.
        order = sorted(range(len(encoded)), key=lambda i: (encoded[i][0], len(encoded[i][1]), i))
        per_batch = max(1, self.batch_size // sampling.n)
        results: list[list[str]] = [[] for _ in prompts]
        with self._adapter_context(adapter):
            for start in range(0, len(order), per_batch):
                idx = order[start : start + per_batch]
                texts = [prompts[i].text if isinstance(prompts[i], Prompt) else prompts[i] for i in idx]
                watch = _FiniteWatch()
                outs = self._generate_batch(
                    [encoded[i][0] for i in idx],
                    [encoded[i][1] for i in idx],
                    sampling,
                    _seed_for(sampling.seed, texts),
                    watch,
                )
                self.generated[adapter] = self.generated.get(adapter, 0) + len(outs)  # a named arm: its own key
                self.nonfinite[adapter] = self.nonfinite.get(adapter, 0) + watch.count()
                for j, i in enumerate(idx):
                    results[i] = outs[j * sampling.n : (j + 1) * sampling.n]
        return results

    def _adapter_context(self, adapter: bool | str) -> Any:
        import contextlib

        if self.has_adapter and not adapter:
            return self.model.disable_adapter()
        if isinstance(adapter, str):
            return use_adapter(self.model, adapter)
        return contextlib.nullcontext()

    def _prefix_cache(self, prefixes: Sequence[tuple[int, ...]], suffix_width: int, room: int) -> tuple[Any, Any, Any]:
        """The key/value cache of each row's few-shot prefix, with the prefix ids and mask.

        Each distinct prefix is computed once; several are left-padded into one forward pass, and
        each row then takes its prefix's keys and values, copied into a cache with room for the
        suffix and `room` answer tokens (see kv_cache.py). Positions follow the mask, so a padded
        prefix sits at the positions it would have alone. Without prefixes: an empty such cache
        (or None where transformers must build its own), empty ids, empty mask."""
        from kia.engines.kv_cache import empty_cache, gather_rows

        torch = self._torch
        row_in = {p: r for r, p in enumerate(dict.fromkeys(prefixes))}  # distinct prefix -> its row
        distinct = list(row_in)
        width = max(len(p) for p in distinct)
        ids = torch.full((len(distinct), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for r, p in enumerate(distinct):
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        row_of = torch.tensor([row_in[p] for p in prefixes], dtype=torch.long)
        if not width:
            return empty_cache(self._config, room), ids[row_of], mask[row_of]
        if len(distinct) == 1:  # no padding: the plain pass
            cache = self.model(input_ids=ids.to(self.device), use_cache=True, **self._cache_only).past_key_values
        else:
            cache = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
                use_cache=True,
                **self._cache_only,
            ).past_key_values
        return gather_rows(cache, row_of.to(self.device), suffix_width + room), ids[row_of], mask[row_of]

    def _generate_batch(
        self,
        prefixes: Sequence[tuple[int, ...]],
        suffixes: list[list[int]],
        sampling: Sampling,
        seed: int,
        watch: Any = None,
    ) -> list[str]:
        """Generate for prompts `prefix + suffix`.

        Each distinct prefix is run once and its keys and values copied to its rows; for sampling,
        each prompt is prefilled once and its cache copied to its `n` samples. Prefixes and
        suffixes are left-padded; the attention mask and the position ids skip the padding, so
        each row computes what it would alone.
        """
        from kia.engines.kv_cache import ROOM

        torch = self._torch
        n, batch = sampling.n, len(suffixes)
        width = max(len(ids) for ids in suffixes)
        suffix_ids = torch.full((batch, width), self._pad, dtype=torch.long)
        suffix_mask = torch.zeros((batch, width), dtype=torch.long)
        for r, ids in enumerate(suffixes):
            suffix_ids[r, width - len(ids) :] = torch.tensor(ids)
            suffix_mask[r, width - len(ids) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self._pad,
            "stopping_criteria": _stopping(self._stop_ids(sampling.stop)),
        }
        if watch is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([watch])
        if sampling.greedy:
            kwargs.update(do_sample=False, num_beams=1, temperature=None, top_k=None, top_p=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=1.0)
        with torch.inference_mode():
            # room for the suffix and the first answer tokens; a longer answer grows the cache
            room = min(sampling.max_new_tokens, ROOM)
            cache, prefix_ids, prefix_mask = self._prefix_cache(prefixes, width, room)
            input_ids = torch.cat([prefix_ids, suffix_ids], dim=1).to(self.device)
            mask = torch.cat([prefix_mask, suffix_mask], dim=1).to(self.device)
            start = prefix_ids.shape[1]
            if n > 1 and width > 1:
                upto = input_ids.shape[1] - 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                cache = self.model(
                    input_ids=input_ids[:, start:upto],
                    attention_mask=mask[:, :upto],
                    position_ids=positions[:, start:upto],
                    past_key_values=cache,
                    use_cache=True,
                    **self._cache_only,
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


def _accepts(model: Any, name: str) -> bool:
    """Whether the (base) model's forward takes the keyword `name`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _cut(text: str, stops: tuple[str, ...]) -> str:
    for s in stops:
        pos = text.find(s)
        if pos != -1:
            text = text[:pos]
    return text


class _FiniteWatch:
    """A logits processor that only looks: which rows ever had NaN or +inf scores, or no finite
    score at all (-inf elsewhere is how top-k masks tokens, so it is fine)."""

    def __init__(self) -> None:
        self.bad: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        row = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | ~torch.isfinite(scores.amax(-1))
        self.bad = row if self.bad is None else self.bad | row
        return scores

    def count(self) -> int:
        return 0 if self.bad is None else int(self.bad.sum())


def _stopping(stop_ids: Any) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnTokens(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.isin(input_ids[:, -1], stop_ids)

    return StoppingCriteriaList([StopOnTokens()])


def use_adapter(model: Any, name: str) -> Any:
    """A context in which the peft model's named adapter is the active one (the main one after)."""
    import contextlib

    if name not in (getattr(model, "peft_config", None) or {}):
        raise EngineError(f"no adapter named '{name}' is loaded")

    @contextlib.contextmanager
    def active() -> Any:
        before = model.active_adapter
        model.set_adapter(name, inference_mode=True)
        try:
            yield
        finally:
            model.set_adapter(before, inference_mode=True)

    return active()


def attach_named_adapter(model: Any, name: str, adapter: str | Path, *, allow_pickle: bool = False) -> None:
    """Load a further adapter into a peft model under `name`, after the same checks as the first."""
    from kia.engines.adapters import check_adapter

    check_adapter(adapter, model, allow_pickle=allow_pickle)
    try:
        model.load_adapter(str(adapter), adapter_name=name, is_trainable=False)
    except Exception as exc:  # peft raises many kinds; the user needs the path and the reason
        raise AdapterError(f"cannot load adapter {adapter}: {exc}") from exc


def attach_adapter(model: Any, adapter: str | Path, *, allow_pickle: bool = False, is_trainable: bool = False) -> Any:
    """Wrap `model` with a peft adapter after checking that it is safe and made for this model."""
    from kia.engines.adapters import check_adapter

    check_adapter(adapter, model, allow_pickle=allow_pickle)
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    except Exception as exc:  # peft raises many kinds; the user needs the path and the reason, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdapterError(f"cannot load adapter {adapter}: {first}") from exc
