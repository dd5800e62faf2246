"""The hf engine's key/value cache that grows in place (kia/engines/kv_cache.py).

Tier 1: the layer holds exactly what transformers' `DynamicLayer` holds through every operation
generation uses. Tier 2: greedy answers through it equal `model.generate` with its own cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from kia.engines.kv_cache import PreallocatedLayer, empty_cache, gather_rows


def _kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 3, generator=g)


def _same(a, b) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_gathered_layer_matches_a_reordered_dynamic_layer_through_updates_and_growth():
    keys, values = _kv(3, 5, 0)
    rows = torch.tensor([2, 0, 0, 1])
    ref = DynamicLayer()
    ref.update(keys, values)
    ref.reorder_cache(rows)
    layer = PreallocatedLayer.gathered(keys, values, rows, room=4)
    _same(layer, ref)
    buffer = layer._k.data_ptr()
    for step in range(7):  # 4 fit in the room; the 5th reallocates, with room again
        k, v = _kv(4, 1, step + 1)
        out = layer.update(k, v)
        ref.update(k, v)
        assert torch.equal(out[0], ref.keys) and torch.equal(out[1], ref.values)
        _same(layer, ref)
        if step < 4:
            assert layer._k.data_ptr() == buffer, "an update within the room must write in place"
    assert layer._k.shape[-2] == 5 + 5 + 4
    assert layer.get_mask_sizes(1) == ref.get_mask_sizes(1)


def test_repeat_select_crop_and_reset_behave_as_the_dynamic_layer():
    keys, values = _kv(2, 6, 3)
    ref, layer = DynamicLayer(), PreallocatedLayer(room=3)
    for cache in (ref, layer):
        cache.update(keys, values)
    _same(layer, ref)
    for cache in (ref, layer):
        cache.batch_repeat_interleave(3)
    _same(layer, ref)
    assert layer._k.shape[-2] == 6 + 3, "repeating the rows keeps the spare room"
    k, v = _kv(6, 2, 4)
    layer.update(k, v)
    ref.update(k, v)
    _same(layer, ref)
    for cache in (ref, layer):
        cache.batch_select_indices(torch.tensor([5, 1]))
        cache.crop(-3)
    _same(layer, ref)
    k, v = _kv(2, 1, 5)
    layer.update(k, v)
    ref.update(k, v)
    _same(layer, ref)
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.keys is None and not layer.is_initialized


def test_empty_layer_allocates_the_prompt_plus_room_on_first_update():
    layer = PreallocatedLayer(room=5)
    assert layer.get_seq_length() == 0
    keys, values = _kv(2, 7, 6)
    layer.update(keys, values)
    assert layer._k.shape == (2, 2, 12, 4) and layer._v.shape == (2, 2, 12, 3)
    assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


MODEL = Path(__file__).resolve().parents[1] / "datasets" / "toyworld" / "model"


@pytest.mark.model
@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="no toy model")
def test_engine_answers_equal_generate_with_transformers_own_cache():
    """Greedy answers of the engine (prefix cache gathered into preallocated layers, and the empty
    preallocated cache of a prompt without prefix) equal plain `model.generate`, prompt by prompt."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kia.engines import Prompt, Sampling
    from kia.engines.hf import HFEngine

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    facts = [json.loads(line) for line in (MODEL.parent / "facts.jsonl").read_text().splitlines()[:12]]
    shots = "".join(f"Q: {f['question']}\nA: {f['answers'][0]}\n" for f in facts[:4])
    prompts = [Prompt(shots, f"Q: {f['question']}\nA:") for f in facts[4:]]
    prompts += [Prompt("", f"Q: {f['question']}\nA:") for f in facts[4:8]]
    engine = HFEngine(model, tokenizer, batch_size=16)
    cache = empty_cache(engine._config, 4)
    assert cache is not None and all(type(layer) is PreallocatedLayer for layer in cache.layers)
    greedy = Sampling(max_new_tokens=24)
    answers = engine.generate(prompts, greedy)
    for prompt, answer in zip(prompts, answers, strict=True):
        # the engine tokenises the two parts apart (kia/engines/__init__.py, Prompt)
        parts = [tokenizer(t, add_special_tokens=False).input_ids for t in (prompt.prefix, prompt.suffix)]
        ids = torch.tensor([parts[0] + parts[1]])
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert answer == [text.split("\n")[0]], prompt.suffix
    # more answer tokens than the room: the layers grow and the answers still agree
    long = Sampling(max_new_tokens=40, stop=())
    assert engine.generate(prompts[:3], long) == [engine.generate([p], long)[0] for p in prompts[:3]]


def test_gather_rows_reorders_layers_it_does_not_preallocate():
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    keys, values = _kv(2, 3, 7)
    sliding = DynamicSlidingWindowLayer(sliding_window=8)
    full = DynamicLayer()
    for layer in (sliding, full):
        layer.update(keys, values)
    cache = DynamicCache()
    cache.layers = [full, sliding]
    rows = torch.tensor([1, 1, 0])
    gather_rows(cache, rows, room=2)
    assert type(cache.layers[0]) is PreallocatedLayer and cache.layers[1] is sliding
    assert torch.equal(cache.layers[0].keys, keys[rows]) and torch.equal(sliding.keys, keys[rows])
