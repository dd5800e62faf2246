"""The embedded toy world: invented facts whose truth kia knows, and the tiny Llama pretrained on them.

- `world`: the seeded generator (entities, relations, exposure bands, refusals, skills);
- `pretrain`: writing the world to disk and pretraining the model on the CPU (`kia toyworld build`);
- `groundtruth`: checking a probe against the world's exposure counts (`kia toyworld check`).
"""

from kia.toyworld.groundtruth import groundtruth_report
from kia.toyworld.pretrain import PretrainConfig, build_toyworld
from kia.toyworld.world import REFUSAL, RELATIONS, SYSTEM_PROMPT, World, WorldConfig, generate_world

__all__ = [
    "REFUSAL",
    "RELATIONS",
    "SYSTEM_PROMPT",
    "PretrainConfig",
    "World",
    "WorldConfig",
    "build_toyworld",
    "generate_world",
    "groundtruth_report",
]
