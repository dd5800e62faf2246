"""A key/value cache that grows in place, for the hf engine's short answers.

transformers' `DynamicLayer` appends each step's keys and values with `torch.cat`, so every
decoding step copies the whole cache of every layer. The engine gives each row its own copy of
its few-shot prefix (about 70 tokens for 10 answer tokens), so those copies dominate: on the toy
model a batch of 128 rows moved about 100 MB per step, a fifth of a CPU decoding step.
`PreallocatedLayer` holds the same tensors at the front of a buffer with room for the tokens still
to come and writes each step in place; the model sees views of the filled part, so attention
covers exactly the positions it covered before.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

ROOM = 16  # spare positions per (re)allocation: most answers end within them


class _Filled:
    """A layer's `keys` or `values`: read, the filled front of its buffer; assigned (by anything
    transformers does to the layer), the new buffer, full."""

    def __init__(self, buffer: str, length: str):
        self.buffer, self.length = buffer, length

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        if layer is None:
            return self
        buf = getattr(layer, self.buffer)
        return None if buf is None else buf[:, :, : getattr(layer, self.length)]

    def __set__(self, layer: Any, tensor: torch.Tensor | None) -> None:
        buf = tensor if tensor is not None and tensor.dim() == 4 else None
        setattr(layer, self.buffer, buf)
        setattr(layer, self.length, 0 if buf is None else buf.shape[-2])


class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` and `values` are views of buffers with `room` spare positions.

    Anything transformers does to the layer (reorder, crop, select rows) assigns `keys` and
    `values`, which become the new buffers; the next `update` that does not fit reallocates with
    `room` to spare. Only the generation loop's per-step appends are in place."""

    def __init__(self, room: int = ROOM):
        self.room = room
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        # filled positions of each buffer: transformers assigns keys, then values, each computed
        # from the old one (crop, select), so they cannot share one length while it does
        self._n = self._nv = 0
        super().__init__()

    keys = _Filled("_k", "_n")
    values = _Filled("_v", "_nv")

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._k = self._v = None
        self._n = self._nv = 0
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self._n if self.is_initialized else 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self._n, key_states.shape[-2]
        if self._k is None or self._v is None or n + m > self._k.shape[-2]:
            self._k = _regrow(self._k, key_states, n, n + m + self.room)
            self._v = _regrow(self._v, value_states, n, n + m + self.room)
        self._k[:, :, n : n + m].copy_(key_states)
        self._v[:, :, n : n + m].copy_(value_states)
        self._n = self._nv = n + m
        return self._k[:, :, : self._n], self._v[:, :, : self._n]

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times (a prompt's cache for its samples), keeping the spare room."""
        if self._k is None or self._v is None or self._n == 0:
            return
        self._k, self._v = _repeat(self._k, self._n, repeats), _repeat(self._v, self._n, repeats)

    @classmethod
    def gathered(cls, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, room: int) -> PreallocatedLayer:
        """A layer whose row i holds row `rows[i]` of `keys`/`values`, with `room` positions to spare:
        the copy to the batch's rows goes straight into the buffer."""
        layer = cls(room)
        layer.lazy_initialization(keys, values)
        n = keys.shape[-2]
        for name, src in (("_k", keys), ("_v", values)):
            buf = src.new_empty((len(rows), src.shape[1], n + room, src.shape[-1]))
            torch.index_select(src, 0, rows, out=buf[:, :, :n])
            setattr(layer, name, buf)
        layer._n = layer._nv = n
        return layer


def _regrow(buf: torch.Tensor | None, like: torch.Tensor, n: int, capacity: int) -> torch.Tensor:
    new = like.new_empty((*like.shape[:-2], capacity, like.shape[-1]))
    if buf is not None and n:
        new[:, :, :n].copy_(buf[:, :, :n])
    return new


def _repeat(buf: torch.Tensor, n: int, repeats: int) -> torch.Tensor:
    b, h, capacity, d = buf.shape
    out = buf.new_empty((b * repeats, h, capacity, d))
    out.view(b, repeats, h, capacity, d)[:, :, :, :n].copy_(buf[:, None, :, :n].expand(b, repeats, h, n, d))
    return out


def gather_rows(cache: Any, rows: torch.Tensor, room: int) -> Any:
    """`cache` with row i taken from row `rows[i]`, its full-attention layers preallocated with
    `room` spare positions; other kinds of layer (sliding windows, linear attention) are reordered
    as transformers does it."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.numel():
            cache.layers[i] = PreallocatedLayer.gathered(layer.keys, layer.values, rows, room)
        else:
            layer.reorder_cache(rows)
    return cache


def empty_cache(config: Any, room: int) -> Any:
    """A `DynamicCache` for `config` whose full-attention layers are `PreallocatedLayer`s, or None
    for a model whose cache is not built from the config this way."""
    try:
        cache = DynamicCache(config=config)
    except Exception:  # a config transformers cannot lay out: let generate build its own cache
        return None
    if not cache.layers:
        return None
    cache.layers = [PreallocatedLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
