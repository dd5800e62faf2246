"""`kia probe`: which facts does the model already know? SliCK categories per fact.

- `config`: `ProbeConfig`, `ProbeResult`;
- `run`: `probe()`, the stage (streamed input, shards, resume, the output folder);
- `slick`: the few-shot greedy and sampled passes and the SliCK labels; `greedy_reliability`, the
  same greedy probe that training's curve and the audit use;
- `prompts`: few-shot prompts (chat template or plain lines) and the seeded exemplar sets;
- `shards`: the probe folder's files: shards, `read_probe`, `summarize`, exemplars.
"""

from kia.probe.config import MATCH_MODES, ProbeConfig, ProbeResult
from kia.probe.prompts import ExemplarSets, PromptBuilder, chat_messages, make_exemplar_sets, training_messages
from kia.probe.run import probe
from kia.probe.shards import CATEGORIES, SLICK_CATEGORIES, facts_from_probe, load_exemplar_sets, read_probe, summarize
from kia.probe.slick import greedy_reliability, probe_facts, slick_label, three_way

__all__ = [
    "CATEGORIES",
    "MATCH_MODES",
    "SLICK_CATEGORIES",
    "ExemplarSets",
    "ProbeConfig",
    "ProbeResult",
    "PromptBuilder",
    "chat_messages",
    "facts_from_probe",
    "greedy_reliability",
    "load_exemplar_sets",
    "make_exemplar_sets",
    "probe",
    "probe_facts",
    "read_probe",
    "slick_label",
    "summarize",
    "three_way",
    "training_messages",
]
