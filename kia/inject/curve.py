"""The per-epoch reliability callback: how fast the new facts go in, and what leaks out meanwhile.

reliability = mean over injected facts of P_greedy, the share of few-shot greedy answers that are
correct (Pletenev et al. 2025, Figure 2), here over `n_sets` exemplar sets (3 by default: the
curve's shape, at a tenth of the paper's cost; the audit measures the full 10).
heldout_known_reliability = the same on a seeded sample of held-out HighlyKnown facts: a drop is
forgetting as it happens.
The curve runs on the model being trained, so in the training's compute dtype (bf16 on a GPU
and, for 4-bit weights, on a CPU with bf16 in hardware); the audit reloads the adapter in its
engine's dtype, where a few greedy answers at the margin can come out differently.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from kia.artifacts import read_jsonl, write_jsonl
from kia.facts import Fact
from kia.probe import ExemplarSets, make_exemplar_sets


def load_eval_facts(build_dir: Path, n_known: int, seed: int) -> tuple[list[Fact], list[Fact], ExemplarSets]:
    """Injected facts, a seeded sample of held-out HighlyKnown facts, and the probe's exemplar sets.

    A build without the probe's sets gets sets drawn (4 shots, seeded) from the held-out
    HighlyKnown facts, as the probe draws them from known facts; from all eval facts when fewer
    than 6 are known."""
    from kia.probe import load_exemplar_sets

    injected = [Fact.from_dict(r) for r in read_jsonl(build_dir / "eval_injected.jsonl")]
    heldout_path = build_dir / "eval_heldout.jsonl"
    heldout = read_jsonl(heldout_path) if heldout_path.exists() else []
    all_known = [Fact.from_dict(r) for r in heldout if r.get("category") == "HighlyKnown"]
    known = random.Random(seed).sample(all_known, min(n_known, len(all_known)))
    sets = load_exemplar_sets(build_dir) if (build_dir / "exemplars.json").exists() else None
    if sets is None or not sets.sets:
        pool = all_known if len(all_known) >= 6 else injected + all_known
        sets = make_exemplar_sets(pool, 10, 4, seed)
    return injected, known, sets


def auto_eval_facts(train_rows: int) -> int:
    """How many injected facts the per-epoch curve asks when `--eval-facts` is not given: a sixth
    of the training rows, between 64 and 200.

    Asking a fact (few-shot prefix shared, ~12 question tokens, ~8 answer tokens) costs about as
    much as training on 0.6 of a row (toy model, CPU: 220 facts in 0.8 s, an epoch of 750 rows in
    4.6 s), so the curve stays near a tenth of the training time, where 200 facts on 750 rows cost
    a fifth. The sample's 95 % interval on reliability is at most 1.96 * 0.5 / sqrt(n): +-12
    points at 64 facts, +-8.8 at 125, +-6.9 at 200; the audit measures every fact with 10 sets."""
    return max(64, min(200, train_rows // 6))


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bar without its dict of numbers at every logging step."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        return None


class ReliabilityCallback(TrainerCallback):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        injected: list[Fact],
        known: list[Fact],
        sets: ExemplarSets,
        log_path: Path,
        *,
        n_sets: int,
        stop_at: float | None,
        progress: Any,
        stop_after: int = 0,
        epochs: int,
        model_id: str,
        resume: bool = False,
        write: bool = True,
        every: int = 1,
    ):
        from kia.engines.hf import HFEngine

        self.engine = HFEngine(model, tokenizer, model_id=model_id, batch_size=128)
        device = self.engine.device
        self._rng_devices = [device.index or 0] if device.type == "cuda" else []
        self.model = model
        self.injected, self.known, self.sets = injected, known, sets
        self.log_path = log_path
        self.n_sets = min(n_sets, len(next(iter(sets.sets.values()))))
        # stop once reliability >= stop_at, but not before epoch stop_after (the step budget)
        self.stop_at, self.stop_after = stop_at, stop_after
        self.progress = progress
        self.epochs = epochs
        # Evaluate (and keep a checkpoint) every `every` epochs and at the last one: a long
        # schedule on a small mixture has hundreds of one-step epochs (see training_schedule).
        self.every = max(1, every)
        self.write = write  # only the main process writes the log and reports progress
        self.curve: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self.epochs_here = 0  # epochs trained by this process (a resumed run skips the earlier ones)
        if resume and log_path.exists():  # keep the epochs measured before the interruption
            self.curve = read_jsonl(log_path)
        # "seconds" on the curve counts from the start of training, across an interruption too
        self._offset = self.curve[-1]["seconds"] if self.curve else 0.0
        self._start = time.time() - self._offset

    def _reliability(self, *groups: list[Fact], adapter: bool) -> list[float | None]:
        """Mean P_greedy of each group of facts, asked in one pass: facts of the same relation share
        a few-shot prefix, so asking the groups together halves the forward passes."""
        from kia.probe import greedy_reliability

        facts = [f for g in groups for f in g]
        if not facts:
            return [None for _ in groups]
        was_training = self.model.training
        self.model.eval()
        start = time.time()
        # Generation seeds the global generator; forking it keeps the training's random stream
        # (dropout, shuffling) the same however much is evaluated.
        try:
            with torch.random.fork_rng(devices=self._rng_devices):
                scores = greedy_reliability(self.engine, facts, self.sets, n_sets=self.n_sets, adapter=adapter)
        finally:
            self.eval_seconds += time.time() - start
            if was_training:
                self.model.train()
        out: list[float | None] = []
        for g in groups:
            part, scores = scores[: len(g)], scores[len(g) :]
            out.append(sum(part) / len(part) if part else None)
        return out

    def base_reliability(self) -> float | None:
        """Reliability of the base model (adapter off) on the injected facts, before training."""
        return self._reliability(self.injected, adapter=False)[0]

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._start = time.time() - self._offset

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        epoch = round(state.epoch)
        self.epochs_here += 1
        if epoch % self.every and epoch < self.epochs:
            control.should_save = False  # a checkpoint goes with each evaluated epoch only
            return
        # The Trainer logs every step; the loss is the mean of the steps since the last evaluation.
        since = epoch - (epoch % self.every or self.every)
        losses = [h["loss"] for h in state.log_history if "loss" in h and since < h.get("epoch", 0) <= epoch]
        loss = sum(losses) / len(losses) if losses else None
        reliability, known = self._reliability(self.injected, self.known, adapter=True)
        row = {
            "epoch": epoch,
            "loss": loss,
            "reliability": reliability,
            "heldout_known_reliability": known,
            "seconds": round(time.time() - self._start, 1),
        }
        self.curve = [r for r in self.curve if r["epoch"] < epoch] + [row]
        if self.write:
            write_jsonl(self.log_path, self.curve)
        if self.progress:
            self.progress(row, self.epochs)
        reached = self.stop_at is not None and row["reliability"] is not None and row["reliability"] >= self.stop_at
        if reached and epoch >= self.stop_after:
            control.should_training_stop = True
