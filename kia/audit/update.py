"""The audit of an update: `kia audit NEW --against OLD`, the candidate judged against production.

The question before deploying an update is not "is it better than the bare base model?" but
"does it keep what the production adapter knows, learn the new facts, and break nothing that
production did not already break?". The base model is loaded once with both adapters (peft named
adapters, or two vLLM `LoRARequest`s), and three arms answer the very same prompts: base,
production, candidate. audit.json keeps the plain audit of the candidate (base vs candidate, as
`kia audit NEW` alone writes it) and adds `update`, the candidate against production:
- retention of the production adapter's injected facts (those of every build it was trained on,
  replayed facts included: `production.builds`): which it still answers, and the list of the
  facts it lost;
- every measure of the plain audit with production in the base's place: reliability on the new
  facts, knowledge shift of the held-out facts relative to production, refusals, collapse,
  benchmark drift.
Sequential editing work (EasyEdit, ROME/MEMIT at scale, Gupta et al. 2024) finds forgetting
gradual, then sudden, so it is measured at every update, per earlier build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kia.artifacts import locate, read_jsonl, read_manifest
from kia.audit.metrics import Arms, mean_p_greedy, share_paired, share_single
from kia.errors import AdapterError, ArtifactError, ConfigError
from kia.facts import Fact

# A fact counts as answered when the majority of its exemplar sets give the right answer: one
# flipped few-shot context does not lose a fact (P_greedy = 1 would), and one lucky one does not
# keep it (P_greedy > 0 would).
ANSWERED = 0.5


@dataclass(frozen=True)
class Production:
    adapter: Path
    adapter_id: str
    builds: list[Path]  # every build it was trained on, oldest first
    manifest: dict[str, Any]


def resolve_production(against: str, candidate: Path, candidate_id: str) -> Production:
    """The production adapter: a finished `kia inject` folder on the candidate's base model, with
    other weights than the candidate's, and the builds it was trained on (its lineage)."""
    from kia.engines import adapter_id, check_adapter

    folder = Path(against)
    manifest = read_manifest(folder, "inject")
    check_adapter(folder)
    own = read_manifest(candidate, "inject")
    theirs, ours = manifest.get("base_model") or {}, own.get("base_model") or {}
    if theirs.get("sha256") and ours.get("sha256"):
        same = theirs["sha256"] == ours["sha256"]
    else:
        a, b = str(theirs.get("id") or manifest.get("model") or ""), str(ours.get("id") or own.get("model") or "")
        same = (
            not a
            or not b
            or a == b
            or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())
        )
    if not same:
        raise AdapterError(
            f"--against {folder}: trained on base model '{theirs.get('id')}', the candidate {candidate} on "
            f"'{ours.get('id')}'; an update is audited on the base model both adapters were trained on"
        )
    pid = adapter_id(folder)
    if pid == candidate_id:
        raise ConfigError(f"--against {folder}: has the same weights as the candidate {candidate} (id {pid[:12]})")
    recorded = [str(b["path"]) for b in (manifest.get("lineage") or {}).get("builds") or []]
    if not recorded:  # trained before lineage was recorded: its own build
        one = manifest.get("build") or (manifest.get("config") or {}).get("build")
        recorded = [str(one)] if one else []
    builds = [locate(b, folder / "manifest.json") for b in recorded]
    for b in builds:
        if not (b / "eval_injected.jsonl").exists():
            raise ArtifactError(f"{b}: a build the production adapter {folder} was trained on is missing")
    return Production(folder, pid, builds, manifest)


def retention_split(production: Production) -> Arms:
    """The facts the production adapter was trained to know: the injected (and replayed) facts of
    every build it has seen, each once, with the build that first brought it."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for build in production.builds:
        for name in ("eval_injected.jsonl", "eval_replay.jsonl"):
            if (build / name).exists():
                for r in read_jsonl(build / name):
                    if str(r["id"]) not in seen:
                        seen.add(str(r["id"]))
                        rows.append({**r, "build": str(r.get("replay_from") or build)})
    return Arms("retention", rows, [Fact.from_dict(r) for r in rows])


def overlap_warning(production: Production, heldout: Arms) -> str | None:
    """A warning when the candidate's held-out facts include facts production was trained on (the
    candidate's build did not follow production's with --after / --replay): their shift relative to
    production then measures training, not harm."""
    trained = {str(r.get("fact_id")) for b in production.builds for r in read_jsonl(b / "train.jsonl")}
    hit = [f.id for f in heldout.facts if f.id in trained]
    if not hit:
        return None
    return (
        f"{len(hit)} of the candidate's {len(heldout.facts)} held-out facts were trained into the production adapter "
        f"(e.g. {hit[0]}): build the update with `kia build --after` or `--replay` the production's build"
    )


def retention(split: Arms, match: str, *, n_boot: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, lost facts) for the production adapter's facts, candidate against production.

    answered(f, arm) = P_greedy(f, arm) >= 1/2 (see ANSWERED);
    - retention = share of the production facts the candidate answers, paired with production's
      share: interval of the change by paired bootstrap, p by exact McNemar;
    - retention_loss = lost / answered by production, lost = answered by production and not by the
      candidate (Wilson interval): what the policy's max_retention_loss bounds;
    - retention_p_greedy = mean P_greedy on those facts, production vs candidate (paired bootstrap).
    Lost facts are listed oldest build first, then by id."""
    pb, pp, pc = (split.p_greedy(arm, match) for arm in ("base", "production", "adapted"))
    prod = [p >= ANSWERED for p in pp]
    cand = [p >= ANSWERED for p in pc]
    lost_idx = [i for i in range(len(pp)) if prod[i] and not cand[i]]
    boot = {"n_boot": n_boot, "seed": seed}
    metrics = {
        "retention": share_paired(
            prod,
            cand,
            higher_is_better=True,
            description="share of the production adapter's injected facts answered (right with at least half the "
            "exemplar sets); base = production, adapted = candidate; p: McNemar",
            **boot,
        ),
        "retention_loss": share_single(
            len(lost_idx),
            sum(prod),
            higher_is_better=False,
            description="facts the production adapter answers that the candidate no longer answers, share of those "
            "production answers",
        ),
        "retention_p_greedy": mean_p_greedy(
            pp,
            pc,
            description="mean P_greedy on the production adapter's injected facts, production -> candidate",
            **boot,
        ),
    }
    builds = [str(r["build"]) for r in split.rows]
    order = {b: k for k, b in enumerate(dict.fromkeys(builds))}
    lost = []
    for i in sorted(lost_idx, key=lambda i: (order[builds[i]], str(split.rows[i]["id"]))):
        r = split.rows[i]
        lost.append({
            "id": r["id"], "question": r["question"], "answers": list(r.get("answers") or []), "build": builds[i],
            "base_p_greedy": pb[i], "production_p_greedy": pp[i], "candidate_p_greedy": pc[i],
            "production_answer": split.first("production")[i], "candidate_answer": split.first("adapted")[i],
        })  # fmt: skip
    return metrics, lost


def by_build(split: Arms, match: str) -> list[dict[str, Any]]:
    """Retention per build the production adapter was trained on, oldest first: forgetting is
    gradual, then sudden, and usually starts with the oldest facts."""
    pp, pc = split.p_greedy("production", match), split.p_greedy("adapted", match)
    out: dict[str, dict[str, Any]] = {}
    for r, a, b in zip(split.rows, pp, pc, strict=True):
        row = out.setdefault(
            str(r["build"]), {"build": str(r["build"]), "facts": 0, "production": 0, "candidate": 0, "lost": 0}
        )
        row["facts"] += 1
        row["production"] += a >= ANSWERED
        row["candidate"] += b >= ANSWERED
        row["lost"] += a >= ANSWERED and b < ANSWERED
    for row in out.values():
        row["retention"] = 1 - row["lost"] / row["production"] if row["production"] else None
    return list(out.values())


def update_section(
    splits: dict[str, Arms],
    production: Production,
    candidate: tuple[str, str],
    assembled: dict[str, Any],
    *,
    match: str,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """audit.json's `update`: who is compared (both adapters by weight hash), retention first, then
    `assembled` (the plain audit's sections computed with production as the base arm)."""
    ret = splits["retention"]
    metrics, lost = retention(ret, match, n_boot=n_boot, seed=seed)
    return {
        "production": {
            "adapter": str(production.adapter),
            "adapter_id": production.adapter_id,
            "builds": [str(b) for b in production.builds],
        },
        "candidate": {"adapter": candidate[0], "adapter_id": candidate[1]},
        "answered_threshold": ANSWERED,
        "lost": lost,
        "retention_by_build": by_build(ret, match),
        "metrics": {**metrics, **assembled["metrics"]},
        **{k: assembled[k] for k in ("shift", "collapse", "refusals", "benchmarks", "examples")},
    }


def production_views(splits: dict[str, Arms]) -> dict[str, Arms]:
    """The plain splits with production in the base arm's place, for `kia.audit.assemble`."""
    return {
        name: Arms(name, s.rows, s.facts, base=s.production, adapted=s.adapted)
        for name, s in splits.items()
        if name in ("injected", "paraphrase", "heldout")
    }


def production_fields(
    per_fact: list[dict[str, Any]], splits: dict[str, Arms], match: str, refused: Any
) -> list[dict[str, Any]]:
    """per_fact.jsonl of an update: every row gains the production arm's answers and category, and
    the retention facts get rows of their own (split "retention"). `refused` flags refusals."""
    from kia.audit.assemble import fact_row
    from kia.audit.shift import category

    ret = splits["retention"]
    pb, pa = ret.p_greedy("base", match), ret.p_greedy("adapted", match)
    rb, ra = refused(ret.first("base")), refused(ret.first("adapted"))
    rows = per_fact + [fact_row(ret, i, (pb[i], pa[i]), (rb[i], ra[i]), None, []) for i in range(len(ret.facts))]
    where = {(s.name, str(r["id"])): i for s in splits.values() for i, r in enumerate(s.rows)}
    p_prod = {s.name: s.p_greedy("production", match) for s in splits.values()}
    for row in rows:
        s = splits[row["split"]]
        i = where[(s.name, str(row["id"]))]
        row.update(
            production_answer=s.production[i][0] if s.production[i] else "",
            production_answers=list(s.production[i]),
            production_p_greedy=p_prod[s.name][i],
            production_category=category(p_prod[s.name][i]),
        )
        if s.name == "retention":
            row["build"] = s.rows[i]["build"]
    return rows
