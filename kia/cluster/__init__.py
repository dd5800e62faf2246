"""Beyond one process: the probe's and the audit's generation passes on a Ray cluster.

- `config`: `RayConfig` (cluster address, replicas, CPUs and GPUs per replica), `RAY_EXTRA`;
- `data`: `map_units`, work units through Ray Data `map_batches`, one kia engine per replica actor;
- `llm`: `generate_greedy`, greedy prompts through Ray's own vLLM batch stage (`ray.data.llm`),
  the adapter picked per row by its `model` field.

Ray is an extra (`pip install "kia[ray]"`) and is imported only when a run asks for it. kia
writes no scheduler: Ray Data schedules, retries and streams; kia says what a unit of work is.
"""

from kia.cluster.config import LOCAL, RAY_EXTRA, RayConfig
from kia.cluster.data import map_units, require_ray
from kia.cluster.llm import generate_greedy

__all__ = ["LOCAL", "RAY_EXTRA", "RayConfig", "generate_greedy", "map_units", "require_ray"]
