"""Engine parity: do vLLM's LoRA answers match peft's for the same adapter?

vLLM applies a LoRA with its own kernels, and its trackers report adapters whose answers silently
differ from peft's (vllm#10798; 83 % agreement over 29,600 paired samples in #47026) or that do
nothing at all on some architectures (#49354, #48019). An audit run through vLLM is only as good
as that agreement, so `kia audit --engine vllm` re-asks a seeded sample of its prompts through
transformers + peft (the reference, loaded after the vLLM engine has shut down) and compares the
greedy answers, arm by arm:

    agreement(arm) = (1/n) Σ 1[answer_vllm(prompt) == answer_peft(prompt)]   (Wilson interval)

over the same n sampled (fact, exemplar set) prompts. The base arm's agreement tells kernel noise
(near-ties decoded differently in fp32 or bf16) from a LoRA problem: an adapter far below the base
is the adapter. Below the policy's `min_engine_parity` the audit warns; it never changes the
verdict (which engine is right is not for the audit to decide).
"""

from __future__ import annotations

import random
from typing import Any

from kia.audit.arms import set_answers
from kia.audit.metrics import Arms
from kia.audit.stats import wilson
from kia.engines import Engine
from kia.probe import ExemplarSets

SPLITS = ("injected", "heldout", "retention")  # facts trained and untrained; paraphrases add little
ROLE = {"adapted": "the one audited", "production": "production"}


def sample(splits: dict[str, Arms], n: int, seed: int) -> list[tuple[str, int, int]]:
    """n (split, fact, exemplar set) triples drawn by seed from every answered prompt."""
    population = [
        (name, i, s)
        for name in SPLITS
        if name in splits
        for i, answers in enumerate(splits[name].adapted)
        for s in range(len(answers))
    ]
    rng = random.Random(f"{seed}:parity")
    return sorted(rng.sample(population, min(n, len(population))))


def engine_parity(
    reference: Engine,
    splits: dict[str, Arms],
    sets: ExemplarSets,
    pc: dict[str, Any],
    arms: dict[str, tuple[bool | str, str | None]],
    *,
    n: int,
    seed: int,
    threshold: float,
    engine: str,
) -> tuple[dict[str, Any], list[str]]:
    """(audit.json's `parity` section, warnings). `arms` maps an arm ("base", "adapted",
    "production") to (how `reference.generate` selects it, the adapter's id or None)."""
    chosen = sample(splits, n, seed)
    pairs = [(splits[name].facts[i], s) for name, i, s in chosen]
    out: dict[str, Any] = {"engine": engine, "reference": reference.name, "prompts": len(chosen),
                           "threshold": threshold, "arms": {}}  # fmt: skip
    warnings = []
    for arm, (select, aid) in arms.items():
        ours = [splits[name].answers(arm)[i][s] for name, i, s in chosen]
        ref = set_answers(reference, pairs, sets, pc, adapter=select)
        same = [a == b for a, b in zip(ours, ref, strict=True)]
        share = sum(same) / len(same) if same else 1.0
        low, high = wilson(sum(same), len(same))
        differ = [
            {"split": name, "id": splits[name].rows[i]["id"], "set": s, engine: a, reference.name: b}
            for (name, i, s), a, b, ok in zip(chosen, ours, ref, same, strict=True)
            if not ok
        ]
        out["arms"][arm] = {
            "adapter_id": aid,
            "agreement": share,
            "ci_low": low,
            "ci_high": high,
            "differ": differ[:10],
        }
        if aid is not None and share < threshold:
            warnings.append(
                f"engine parity: {engine}'s greedy answers through the adapter {aid[:12]} ({ROLE.get(arm, arm)}) agree with "
                f"{reference.name} (peft) on {share:.0%} of {len(same)} sampled prompts, below min_engine_parity "
                f"{threshold:.2f} (base model: {out['arms'].get('base', {}).get('agreement', float('nan')):.0%}); "
                f"its LoRA may be misapplied: compare with `kia audit --engine hf`"
            )
    return out, warnings
