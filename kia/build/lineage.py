"""Builds that follow earlier ones: `kia build PROBE --after OLD_BUILD` and `--replay OLD_BUILD[:N]`.

An update's mixture is built from the same probe run as the builds before it, so without care it
would pick the same Unknown facts again (the picks are seeded) and hold out facts the production
adapter was trained on. A build that follows earlier builds therefore
- never injects a fact an earlier build injected (they are Unknown to the base model, but not to
  the adapter being updated);
- never holds out a fact or question an earlier build trained on (the held-out split measures
  what training did to untrained facts);
- with `--replay BUILD[:N]`, mixes N (default all) of the facts injected by BUILD and by the builds
  before it into training again, each with the rows it was first trained on (its question and
  trained paraphrases, exactly as trained), as `kind: replay`; they are listed in
  eval_replay.jsonl and, like every earlier fact, kept out of the held-out split. Replay is the
  classic defence against forgetting in continual learning: the update keeps rehearsing part of
  what the adapter already knows.
The manifest's `lineage` names every earlier build (transitively, oldest first), so the next
build after this one follows them all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import locate, read_jsonl, read_manifest, sha256_file
from kia.errors import ArtifactError, ConfigError

FIRST_KINDS = ("unknown", "paraphrase")  # the rows that carry an injected fact


def parse_replay(item: str) -> tuple[str, int | None]:
    """ "runs/b1" -> ("runs/b1", None) (all of its facts); "runs/b1:20" -> ("runs/b1", 20)."""
    path, sep, tail = item.rpartition(":")
    if sep and tail.isdigit() and path:
        n = int(tail)
        if n < 1:
            raise ConfigError(
                f"--replay {item}: N must be at least 1 (follow a build without replay with --after {path})"
            )
        return path, n
    return item, None


@dataclass
class _Build:
    path: Path
    manifest: dict[str, Any]
    injected: list[dict[str, Any]]  # its eval_injected rows (the facts it injected, not its replays)
    train: list[dict[str, Any]]


@dataclass
class Earlier:
    """Everything earlier builds trained, read from their folders."""

    builds: list[_Build] = field(default_factory=list)  # oldest first, each once
    chains: dict[str, list[_Build]] = field(default_factory=dict)  # a given build -> it and its lineage

    @property
    def injected_ids(self) -> set[str]:
        return {str(r["id"]) for b in self.builds for r in b.injected}

    @property
    def trained_ids(self) -> set[str]:
        return {str(r["fact_id"]) for b in self.builds for r in b.train if r.get("fact_id") is not None}

    @property
    def trained_questions(self) -> list[str]:
        return [str(r["question"]) for b in self.builds for r in b.train if r.get("question")]

    def record(self) -> list[dict[str, Any]]:
        """The manifest's `lineage.builds`: every earlier build, oldest first."""
        return [{"path": str(b.path), "train_sha256": sha256_file(b.path / "train.jsonl")} for b in self.builds]


def _read(path: Path, cache: dict[Path, _Build]) -> _Build:
    key = path.resolve()
    if key not in cache:
        manifest = read_manifest(path, "build")
        for name in ("train.jsonl", "eval_injected.jsonl"):
            if not (path / name).exists():
                raise ArtifactError(f"{path}: no {name}; rebuild it with `kia build`")
        cache[key] = _Build(path, manifest, read_jsonl(path / "eval_injected.jsonl"), read_jsonl(path / "train.jsonl"))
    return cache[key]


def read_earlier(paths: list[str]) -> Earlier:
    """The builds named by --after / --replay and every build in their recorded lineage."""
    cache: dict[Path, _Build] = {}
    out = Earlier()
    seen: set[Path] = set()
    for given in paths:
        head = _read(Path(given), cache)
        chain = []
        for rec in (head.manifest.get("lineage") or {}).get("builds") or []:
            where = locate(str(rec["path"]), head.path / "manifest.json")
            if not (where / "manifest.json").exists():
                raise ArtifactError(f"{where}: recorded in {head.path}/manifest.json as an earlier build, but missing")
            chain.append(_read(where, cache))
        chain.append(head)
        out.chains[given] = chain
        for b in chain:
            if b.path.resolve() not in seen:
                seen.add(b.path.resolve())
                out.builds.append(b)
    return out


def replay_rows(
    earlier: Earlier, replay: list[tuple[str, int | None]], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, eval_replay rows, the manifest's per-item record) for the --replay items.

    Each item draws its N facts from the facts injected by its build and the builds before it:
    sorted by id, shuffled by a stream of its own (seed, item index), the first N taken, so the
    draw nests (the 10 of N=10 are the first 10 of N=20). A fact drawn by two items counts once."""
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    record: list[dict[str, Any]] = []
    taken: set[str] = set()
    for k, (path, n) in enumerate(replay):
        pool = {str(r["id"]): (r, b) for b in earlier.chains[path] for r in b.injected}
        if n is not None and n > len(pool):
            raise ConfigError(
                f"--replay {path}:{n}: that build and the builds before it injected only {len(pool)} facts"
            )
        order = sorted(pool)
        random.Random(f"{seed}:replay:{k}").shuffle(order)
        chosen = [i for i in order[: n if n is not None else len(order)] if i not in taken]
        n_rows = 0
        for fid in sorted(chosen):
            fact, where = pool[fid]
            first = [r for r in where.train if str(r.get("fact_id")) == fid and r.get("kind") in FIRST_KINDS]
            rows += [{**r, "kind": "replay", "replay_of": r["kind"], "replay_from": str(where.path)} for r in first]
            evals.append({**fact, "replay_from": str(where.path)})
            n_rows += len(first)
        taken.update(chosen)
        record.append({"build": path, "asked": n, "facts": len(chosen), "rows": n_rows})
    return rows, evals, record
