"""The sweep's one held-out set and the grid's fit to the probe run.

The held-out set is drawn once, from the whole probe run, before any point is built
(`kia.build.draw_heldout`), and every point's build takes it as its eval_heldout split
(`BuildConfig.heldout_ids`): knowledge shift, collapse and refusals are then measured on the same
facts at every N and recipe, so they differ only by what was trained. The training picks come
from the facts outside it, so the grid must fit in what is left: checked for every point before
any work starts, with the value that does not fit named.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from kia.errors import ConfigError
from kia.sweep.config import SweepConfig

HELDOUT_FILE = "heldout.json"


def heldout_set(config: SweepConfig, out: Path) -> dict[str, Any]:
    """The held-out set: the one in the sweep folder's heldout.json when an earlier run of this
    sweep drew it with the same settings, else drawn now (written by the caller, once the grid fits)."""
    from kia.artifacts import read_json, sha256_file
    from kia.build import draw_heldout

    path = out / HELDOUT_FILE
    probe_sha = sha256_file(Path(config.probe) / "facts.parquet")
    wanted = {"n": config.heldout, "seed": config.heldout_seed, "stratify": config.stratify, "probe_sha256": probe_sha}
    if path.exists() and not config.overwrite:
        data = read_json(path)
        if {k: data.get(k) for k in wanted} == wanted:
            return data
    ids = draw_heldout(config.probe, config.heldout, config.heldout_seed, config.stratify)
    return {**wanted, "ids": ids}


def pools(config: SweepConfig, heldout_ids: list[str]) -> dict[str, int]:
    """Facts per three-way category left for training once the held-out facts (and any fact
    asking one of their questions, as the build leaves out) are set aside."""
    from kia.facts import normalize
    from kia.probe import read_probe

    table = read_probe(Path(config.probe)).select(["id", "question", "category"])
    rows = list(table.iter_rows(named=True))
    held = set(heldout_ids)
    questions = {normalize(r["question"]) for r in rows if r["id"] in held}
    left = Counter(r["category"] for r in rows if r["id"] not in held and normalize(r["question"]) not in questions)
    return {c: left.get(c, 0) for c in ("Unknown", "MaybeKnown", "HighlyKnown")}


def unfit_points(config: SweepConfig, left: dict[str, int], n_heldout: int) -> list[dict[str, Any]]:
    """Every (N, recipe) of the grid that needs more facts than are left, each with a one-line
    reason naming the value: {"n", "recipe" (a label), "reason"}; empty when the whole grid fits."""
    where = f"outside the {n_heldout} held-out facts"
    unknown = left["Unknown"]
    fits = [n for n in sorted(config.unknown) if n <= unknown]
    out = []
    for n in sorted(config.unknown):
        if n > unknown:
            hint = f"; the grid that fits: --unknown {','.join(map(str, fits))}" if fits else ""
            reason = (
                f"--unknown {n}: the probe has only {unknown} Unknown facts {where} (the largest N that fits is "
                f"{unknown}){hint}"
            )
            out += [{"n": n, "recipe": r.label, "reason": reason} for r in config.recipes]
            continue
        for r in config.recipes:
            for per, cat, key in ((r.highly_known, "HighlyKnown", "K"), (r.maybe_known, "MaybeKnown", "M")):
                if per and per * n > left[cat]:
                    reason = (
                        f"--unknown {n} with --recipe {r.label}: needs {per * n} {cat} facts ({key}={per} per fact), "
                        f"but the probe has only {left[cat]} {where}; with {key}={per} the largest N that fits is "
                        f"{left[cat] // per}"
                    )
                    out.append({"n": n, "recipe": r.label, "reason": reason})
                    break
    return out


def check_grid(config: SweepConfig, left: dict[str, int], n_heldout: int) -> list[dict[str, Any]]:
    """The grid's unfit points (`unfit_points`): a one-line error for the first, naming its value,
    unless `config.skip_unfit`, where they are returned to be listed as not run."""
    unfit = unfit_points(config, left, n_heldout)
    if unfit and not config.skip_unfit:
        more = f" ({len(unfit)} points do not fit)" if len(unfit) > 1 else ""
        raise ConfigError(f"{unfit[0]['reason']}{more}; or pass --skip-unfit to run the points that fit")
    return unfit
