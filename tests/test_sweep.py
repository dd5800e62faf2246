"""Tier 1: kia sweep's logic without a model: the grid's parsing and fit, the shared held-out set,
the training schedule, the base-arm and benchmark caches, the recommendation, the findings, and
the capacity page (escaped, inert; in headless Chromium when it is installed).

tests/test_sweep_model.py runs a real two-point sweep on the toy model.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_build import fake_embed, make_probe_dir  # noqa: E402

from kia.engines import Prompt, Sampling  # noqa: E402
from kia.errors import ConfigError  # noqa: E402
from kia.sweep import Recipe, SweepConfig, parse_ints, render_capacity  # noqa: E402
from kia.sweep.findings import findings  # noqa: E402
from kia.sweep.page import render_html  # noqa: E402
from kia.sweep.table import recommend  # noqa: E402


@pytest.fixture(autouse=True)
def no_real_embedder(monkeypatch):
    monkeypatch.setattr("kia.build.paraphrase._embed", fake_embed)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return make_probe_dir(tmp_path_factory.mktemp("probe"), per_relation=20)


# --- the grid ---------------------------------------------------------------------------------


def test_recipes_parse_in_any_order_and_case():
    assert Recipe.parse("K=1,P=0") == Recipe(1, 0)
    assert Recipe.parse(" p = 10 , k=0 ") == Recipe(0, 10)
    assert Recipe.parse("K=2,P=1,M=3") == Recipe(2, 1, 3)
    assert Recipe.parse("P=3").label == "K=0,P=3" and Recipe(1, 0, 2).slug == "k1-p0-m2"
    assert Recipe(1, 10).rows_per_fact == 12


@pytest.mark.parametrize(
    "text,named",
    [
        ("K=1;P=0", "K=1;P=0 is not a whole number"),
        ("K=x,P=0", "K=x is not a whole number"),
        ("K=-1", "K=-1 is not a whole number"),
        ("Q=1", "unknown key 'Q'"),
        ("K=1,K=2", "K is given twice"),
        ("K1,P0", "'K1' is not KEY=VALUE"),
        ("", "expected keys like"),
        ("K=1,,P=0", "expected keys like"),
    ],
)
def test_a_malformed_recipe_is_one_line_naming_it(text, named):
    with pytest.raises(ConfigError) as err:
        Recipe.parse(text)
    message = str(err.value)
    assert "\n" not in message and f"--recipe '{text}'" in message and named in message


@pytest.mark.parametrize(
    "text,named", [("10,x", "'x' is not a whole number"), ("10,10", "10 is given twice"), ("0,5", "0 is below 1"),
                   ("10,", "expected comma-separated")],
)  # fmt: skip
def test_bad_number_lists_name_the_value(text, named):
    assert parse_ints("10, 30,100", "--unknown") == (10, 30, 100)
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_ints(text, "--unknown", least=1)


def test_points_run_small_n_first():
    config = SweepConfig(probe="p", unknown=(30, 10), recipes=(Recipe(0, 0), Recipe(1, 0)), seeds=(0, 1))
    names = [p.name for p in config.points()]
    assert names[:4] == ["n10-k0-p0-s0", "n10-k0-p0-s1", "n10-k1-p0-s0", "n10-k1-p0-s1"] and len(names) == 8
    with pytest.raises(ConfigError, match="a recipe is given twice"):
        SweepConfig(probe="p", unknown=(10,), recipes=(Recipe(0, 0), Recipe(0, 0)))


def test_a_grid_too_large_for_the_probe_fails_before_any_work(probe_dir, tmp_path):
    """The probe has 40 Unknown, 96 MaybeKnown and 24 HighlyKnown facts; with 12 held out (4 per
    category) 36 Unknown and 20 HighlyKnown are left for training."""
    from kia.sweep import sweep

    out = tmp_path / "sweep"
    with pytest.raises(ConfigError) as err:
        sweep(SweepConfig(probe=str(probe_dir), unknown=(10, 1000), heldout=12, output=str(out)))
    message = str(err.value)
    assert "--unknown 1000" in message and "outside the 12 held-out facts" in message and "\n" not in message
    assert "the grid that fits: --unknown 10" in message
    assert not out.exists()  # nothing written, not even the folder
    with pytest.raises(ConfigError, match=r"--unknown 20 with --recipe K=2,P=0: needs 40 HighlyKnown"):
        sweep(SweepConfig(probe=str(probe_dir), unknown=(10, 20), recipes=(Recipe(2, 0),), heldout=12,
                          output=str(out)))  # fmt: skip
    assert not out.exists()


def test_skip_unfit_lists_the_points_the_probe_cannot_fill_and_runs_the_rest(probe_dir, tmp_path):
    """Same probe as above: 36 Unknown and 20 HighlyKnown facts left outside 12 held out."""
    from kia.sweep.grid import check_grid, pools, unfit_points

    config = SweepConfig(probe=str(probe_dir), unknown=(10, 20, 1000), recipes=(Recipe(0, 0), Recipe(1, 0)),
                         heldout=12, output=str(tmp_path / "s"))  # fmt: skip
    left = {"Unknown": 36, "MaybeKnown": 92, "HighlyKnown": 20}
    unfit = unfit_points(config, left, 12)
    assert [(u["n"], u["recipe"]) for u in unfit] == [(1000, "K=0,P=0"), (1000, "K=1,P=0")]
    left["HighlyKnown"] = 15
    unfit = unfit_points(config, left, 12)
    assert [(u["n"], u["recipe"]) for u in unfit] == [(20, "K=1,P=0"), (1000, "K=0,P=0"), (1000, "K=1,P=0")]
    assert "needs 20 HighlyKnown facts" in unfit[0]["reason"]
    with pytest.raises(ConfigError, match=r"\(3 points do not fit\); or pass --skip-unfit to run the points that fit"):
        check_grid(config, left, 12)
    skipping = SweepConfig(**{**config.__dict__, "skip_unfit": True})
    assert check_grid(skipping, left, 12) == unfit
    assert pools(config, [])["Unknown"] == 40  # the fixture's probe, nothing held out


def test_a_point_not_run_ends_its_recipe_curve_and_is_named():
    recipes = (Recipe(0, 0), Recipe(1, 0))
    rows = [_row(n, r.label, 0, "PASS") for n in (10, 30) for r in recipes] + [_row(100, "K=0,P=0", 0, "FAIL")]
    unfit = [{"n": 100, "recipe": "K=1,P=0", "reason": "needs 100 HighlyKnown facts"}]
    rec = recommend(rows, recipes, (10, 30, 100), unfit)
    by = {p["recipe"]: p for p in rec["per_recipe"]}
    assert by["K=1,P=0"]["max_n"] == 30 and by["K=1,P=0"]["not_run"] == 100 and by["K=1,P=0"]["first_failure"] is None
    assert by["K=0,P=0"]["max_n"] == 30 and by["K=0,P=0"]["first_failure"]["n"] == 100
    # a tie at 30: fewer rows per fact wins, and its failure at 100 is said
    assert rec["recipe"] == "K=0,P=0" and rec["text"].endswith("N = 100 fails).")
    only = recommend(rows[1::2], recipes[1:], (10, 30, 100), unfit)
    assert only["text"].endswith("N = 100 was not run: the probe has too few facts for it).")
    data = {**hostile_sweep(), "recommendation": only, "unfit": unfit}
    html = render_html(data)
    assert (
        "N = 100 not run (too few facts in the probe)" in html and "N = 100 with K=1,P=0: needs 100 HighlyKnown" in html
    )


def test_the_command_prints_one_line_errors(probe_dir, tmp_path):
    from kia.cli import cli
    from kia.commands import register

    register(cli)
    base = ["sweep", str(probe_dir), "-o", str(tmp_path / "s"), "--heldout", "12"]
    for args, named in (
        (["--unknown", "10,1000"], "--unknown 1000"),
        (["--unknown", "10", "--recipe", "K=one"], "--recipe 'K=one'"),
        (["--unknown", "ten"], "--unknown 'ten'"),
        (["--unknown", "10", "--stop-at-reliability", "1.5"], "--stop-at-reliability must be in (0, 1]"),
        (["--unknown", "10", "--lr", "-1"], "--lr must be positive"),
    ):
        res = CliRunner().invoke(cli, [*base, *args])
        assert res.exit_code == 2, res.output
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], res.output
    assert "Examples" in CliRunner().invoke(cli, ["sweep", "--help"]).output


# --- the shared held-out set ------------------------------------------------------------------


def test_builds_given_one_heldout_set_all_measure_on_it_and_never_train_on_it(probe_dir, tmp_path):
    from kia.artifacts import read_jsonl, write_json
    from kia.build import BuildConfig, build, draw_heldout

    ids = draw_heldout(probe_dir, 12, seed=0)
    assert ids == draw_heldout(probe_dir, 12, seed=0) and len(ids) == 12
    write_json(tmp_path / "heldout.json", {"ids": ids})
    outs = []
    for n, k, seed in ((5, 0, 0), (20, 1, 0), (20, 0, 1)):
        out = tmp_path / f"b{n}-{k}-{seed}"
        build(BuildConfig(probe=str(probe_dir), output=str(out), unknown=n, highly_known=k, seed=seed,
                          heldout_ids=str(tmp_path / "heldout.json")))  # fmt: skip
        outs.append(out)
        trained = {r["fact_id"] for r in read_jsonl(out / "train.jsonl")}
        assert not trained & set(ids)
    first = (outs[0] / "eval_heldout.jsonl").read_bytes()
    assert all((o / "eval_heldout.jsonl").read_bytes() == first for o in outs)
    assert sorted(r["id"] for r in read_jsonl(outs[0] / "eval_heldout.jsonl")) == sorted(ids)
    write_json(tmp_path / "bad.json", {"ids": [*ids, "no-such-fact"]})
    with pytest.raises(ConfigError, match="'no-such-fact' is not in the probe run"):
        build(BuildConfig(probe=str(probe_dir), output=str(tmp_path / "x"), unknown=5,
                          heldout_ids=str(tmp_path / "bad.json")))  # fmt: skip
    with pytest.raises(ConfigError, match="outside the 12 held-out facts"):
        build(BuildConfig(probe=str(probe_dir), output=str(tmp_path / "y"), unknown=40,
                          heldout_ids=str(tmp_path / "heldout.json")))  # fmt: skip


# --- the training schedule --------------------------------------------------------------------


def test_the_default_schedule_trains_the_step_budget_then_until_the_target_up_to_a_cap():
    from kia.inject import DEFAULT_CAP, DEFAULT_MIN_STEPS, DEFAULT_TARGET, InjectConfig, training_schedule

    default = InjectConfig(build="b")
    small = training_schedule(default, 10, 60, 16)  # 30 Unknown + 30 HighlyKnown: 4 steps an epoch
    budget = -(-DEFAULT_MIN_STEPS // 4)
    assert small["steps_per_epoch"] == 4 and small["budget_epochs"] == budget and small["stop_after"] == budget
    assert small["epochs"] == DEFAULT_CAP * budget and small["stop_at"] == DEFAULT_TARGET
    assert small["curve_every"] == -(-small["epochs"] // 20) and budget % small["curve_every"] == 0
    assert "max(10, ceil(" in small["rule"] and f"until reliability >= {DEFAULT_TARGET}" in small["rule"]
    large = training_schedule(default, 10, 6000, 16)  # a large mixture: the preset's epochs, then on
    assert large["budget_epochs"] == 10 and large["epochs"] == 10 * DEFAULT_CAP and large["curve_every"] == 2
    own = training_schedule(InjectConfig(build="b", stop_at_reliability=0.8), 10, 6000, 16)
    assert own["stop_at"] == 0.8 and own["stop_after"] == 10
    exact = training_schedule(InjectConfig(build="b", epochs=3), 3, 60, 16)  # --epochs means exactly
    assert exact["epochs"] == 3 and exact["min_steps"] == 0 and exact["stop_at"] is None
    capped = training_schedule(InjectConfig(build="b", epochs=40, stop_at_reliability=0.95), 40, 6000, 16)
    assert capped["epochs"] == 40 and capped["stop_at"] == 0.95 and capped["stop_after"] == 0
    both = training_schedule(InjectConfig(build="b", epochs=3, min_steps=20), 3, 60, 16)
    assert both["epochs"] == 5
    with pytest.raises(ConfigError, match="--min-steps"):
        InjectConfig(build="b", min_steps=-1)


# --- the caches -------------------------------------------------------------------------------


def test_the_base_arm_cache_answers_only_the_same_greedy_adapter_off_call(tmp_path):
    from kia.engines.scripted import ScriptedEngine
    from kia.sweep.shared import BaseArmCache

    inner = ScriptedEngine({"a?": ["x", "y"], "b?": ["u", "v"]})
    cache = BaseArmCache(inner, tmp_path, {"model": "m"})
    greedy = Sampling()
    calls = [Prompt("Q: z\nA: 1\n", "Q: a?\nA:"), "Q: b?\nA:"]
    first = cache.generate(calls, greedy)
    assert cache.generate(calls, greedy) == first and inner.n_generated == 2 and cache.hits == 2
    cache.generate(calls[:1], greedy)  # another call (a subset): generated, not taken from the cache
    cache.generate(calls, Sampling(n=2, temperature=0.5, seed=1))  # sampled: never cached
    cache.generate(calls, greedy, adapter=False)
    assert inner.n_generated == 2 + 1 + 4 and len(list(tmp_path.glob("*.json"))) == 2
    inner.has_adapter = True
    cache.generate(calls, greedy, adapter=True)  # the adapter arm: never cached
    assert inner.n_generated == 9
    again = BaseArmCache(ScriptedEngine({}), tmp_path, {"model": "m"})  # a resumed sweep: from disk
    assert again.generate(calls, greedy) == first and again.inner.n_generated == 0
    other = BaseArmCache(ScriptedEngine({}), tmp_path, {"model": "other"})
    assert other.generate(calls, greedy) != first  # another model's answers are not these
    assert cache.model_id == "scripted"  # everything else is the engine's


def test_the_score_store_keeps_scores_per_key(tmp_path):
    from kia.sweep.shared import ScoreStore

    store = ScoreStore(tmp_path)
    scores = {"toy_mc": {("toy_mc", 0): 1.0, ("toy_mc", 1): 0.0}}
    assert "k" not in store
    store["k"] = scores
    assert "k" in store and ScoreStore(tmp_path)["k"] == scores and list(store) == ["k"] and len(store) == 1
    with pytest.raises(KeyError):
        store["other"]


# --- the table, recommendation and findings ---------------------------------------------------


def _row(n, recipe, seed, verdict, **kw):
    r = Recipe.parse(recipe)
    row = {"point": f"n{n}-{r.slug}-s{seed}", "n": n, "recipe": r.label, "seed": seed, "verdict": verdict,
           "highly_known": r.highly_known, "paraphrases": r.paraphrases, "maybe_known": r.maybe_known,
           "reasons": [] if verdict == "PASS" else ["negative shift 0.300 > max_negative_shift 0.150"],
           "reliability": 1.0, "positive_shift": 0.05, "negative_shift": 0.1, "refusal_rate_base": 0.12,
           "refusal_rate": 0.05, "exploded_answers": 0, "train_rows": n, "generalisation": 0.4,
           "generalisation_base": 0.1, "heldout_accuracy": 0.5, "heldout_accuracy_base": 0.55,
           "distinct_answers": 90, "distinct_answers_base": 100}  # fmt: skip
    return {**row, **kw}


def test_the_recommendation_is_the_largest_n_passing_at_every_smaller_n_and_seed():
    recipes = (Recipe(0, 0), Recipe(1, 0), Recipe(0, 10))
    rows = [_row(n, "K=0,P=0", s, "PASS" if n <= 10 else "FAIL") for n in (10, 30, 100) for s in (0, 1)]
    rows += [_row(n, "K=1,P=0", s, "PASS" if n <= 30 or (n == 100 and s == 0) else "FAIL")
             for n in (10, 30, 100) for s in (0, 1)]  # fmt: skip
    rows += [_row(n, "K=0,P=10", s, "PASS" if n != 30 else "FAIL") for n in (10, 30, 100) for s in (0, 1)]
    rec = recommend(rows, recipes, (10, 30, 100))
    assert rec["recipe"] == "K=1,P=0" and rec["max_n"] == 30
    assert rec["text"].startswith("With recipe K=1,P=0, at most 30 facts per adapter keep every rule")
    by = {p["recipe"]: p for p in rec["per_recipe"]}
    assert by["K=0,P=10"]["max_n"] == 10  # a pass at 100 above a failure at 30 does not count
    assert by["K=1,P=0"]["first_failure"]["n"] == 100 and by["K=1,P=0"]["first_failure"]["seeds"] == [1]
    tie = recommend([_row(10, "K=0,P=10", 0, "PASS"), _row(10, "K=0,P=0", 0, "PASS")], recipes[::-1], (10,))
    assert tie["recipe"] == "K=0,P=0"  # a tie goes to fewer training rows per fact
    none = recommend([_row(10, "K=0,P=0", 0, "FAIL")], recipes[:1], (10,))
    assert none["recipe"] is None and none["text"].startswith(
        "No recipe keeps every rule of the policy, even at N = 10"
    )


def test_findings_are_decided_by_the_table():
    rows = [
        _row(10, "K=0,P=0", 0, "PASS", reliability=0.98, exploded_answers=4, bench_toy_mc_delta=-0.01),
        _row(10, "K=1,P=0", 0, "PASS", reliability=0.95, exploded_answers=0, bench_toy_mc_delta=0.0),
        _row(100, "K=0,P=0", 0, "FAIL", reliability=0.7, negative_shift=0.3, bench_toy_mc_delta=-0.08),
        _row(100, "K=1,P=0", 0, "FAIL", reliability=0.8, refusal_rate=0.2, bench_toy_mc_delta=-0.05),
    ]
    got = {f["id"]: f for f in findings(rows)}
    assert [got[k]["held"] for k in ("small_n_reliability", "small_n_shift", "refusals_fall", "explosion",
                                      "benchmark_drop")] == [True, True, True, True, True]  # fmt: skip
    assert "N = 10: -0.005, N = 100: -0.065" in got["benchmark_drop"]["evidence"]
    # a lower mean at the largest N whose intervals still reach zero is noise, not a drop
    unsure = [dict(r, bench_toy_mc_ci_high=0.01 if r["n"] == 100 else 0.05) for r in rows]
    got = {f["id"]: f for f in findings(unsure)}
    assert got["benchmark_drop"]["held"] is False and "not every point" in got["benchmark_drop"]["evidence"]
    unsure[3]["bench_toy_mc_ci_high"] = unsure[2]["bench_toy_mc_ci_high"] = -0.01
    assert {f["id"]: f for f in findings(unsure)}["benchmark_drop"]["held"] is True
    rows[0]["reliability"] = 0.5
    rows[2]["bench_toy_mc_delta"] = rows[3]["bench_toy_mc_delta"] = 0.02
    got = {f["id"]: f for f in findings(rows)}
    assert got["small_n_reliability"]["held"] is False and got["benchmark_drop"]["held"] is False
    alone = {f["id"]: f for f in findings([_row(10, "K=0,P=0", 0, "PASS")])}
    assert alone["explosion"]["held"] is None and alone["benchmark_drop"]["held"] is None


# --- the page ---------------------------------------------------------------------------------

HOSTILE = [
    "<script>document.title='PWNED'</script>",
    "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">",
    "<svg onload=alert(1)>",
]


def hostile_sweep(url: str = "http://127.0.0.1:9") -> dict:
    rows = [_row(n, rc, s, v) for n, v in ((10, "PASS"), (30, "FAIL")) for rc in ("K=0,P=0", "K=1,P=0") for s in (0, 1)]
    for r in rows:
        r.update(bench_toy_mc_delta=-0.01 * r["n"] / 10, bench_toy_mc_ci_low=-0.05, bench_toy_mc_ci_high=0.02)
    rows[-1]["reasons"] = [f"3 exploded answers ('{HOSTILE[0]}' 0 -> 9 questions)", HOSTILE[1]]
    rows[-1]["exploded_examples"] = [HOSTILE[0], f'<img src="{url}/img">', HOSTILE[2]]
    rows[-1]["point"] = f'<iframe src="{url}/frame"></iframe>'
    rec = recommend(rows, (Recipe(0, 0), Recipe(1, 0)), (10, 30))
    return {
        "model": f"<link rel=stylesheet href={url}/css>", "probe": "runs/p", "rows": rows, "recommendation": rec,
        "grid": {"unknown": [10, 30], "recipes": ["K=0,P=0", "K=1,P=0"], "seeds": [0, 1]},
        "heldout": {"n": 12, "categories": {"Unknown": 4}, "training_pools": {"Unknown": 36}},
        "policy": {"min_reliability": 0.8, "max_negative_shift": 0.15, "max_benchmark_drop": 0.05,
                   "max_exploded_answers": 3, HOSTILE[1]: HOSTILE[0]},
        "benchmarks": ["toy_mc"], "findings": findings(rows), "shared": {"audit_model_loads": 1}, "seconds": 12.0,
    }  # fmt: skip


def test_the_page_draws_every_curve_with_the_policy_limits_and_says_the_recommendation():
    html = render_html(hostile_sweep())
    assert html == render_html(hostile_sweep())  # deterministic
    assert "With recipe K=0,P=0, at most 10 facts per adapter keep every rule of the policy" in html
    assert html.count("<svg ") == 9  # 8 metrics + the benchmark
    assert "policy min_reliability" in html and "policy max_negative_shift" in html
    assert "policy max_exploded_answers" in html and "policy max_benchmark_drop" in html
    assert html.count("<polygon ") == 18 and html.count("<polyline ") == 18  # a band and a line per recipe
    assert "refusals fall after training" in html and "base model 0.120" in html


def test_hostile_text_on_the_page_is_text():
    html = render_html(hostile_sweep())
    assert "<script" not in html and "<img" not in html and "<iframe" not in html and "<link" not in html
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;" in html
    assert html.count("<svg") == 9 and "&lt;svg onload=alert(1)&gt;" in html
    assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.I)
    assert not re.search(r"""<[^>]*\s(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)  # in a tag
    assert "default-src 'none'" in html


def test_wrong_types_do_not_crash(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"rows": [{"n": "x"}, 3], "grid": [], "heldout": {"categories": 2},
                                                     "recommendation": "no", "findings": [None]}))  # fmt: skip
    assert "How many facts" in render_capacity(tmp_path).read_text(encoding="utf-8")
    (tmp_path / "sweep.json").write_text("[]")
    with pytest.raises(Exception, match="not a sweep result"):
        render_capacity(tmp_path)


@pytest.mark.browser
def test_the_page_in_chromium_runs_nothing_and_requests_nothing(tmp_path):
    import test_report as tr

    if tr.CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    canary = tr.Canary()
    try:
        (tmp_path / "sweep.json").write_text(json.dumps(hostile_sweep(canary.url)), encoding="utf-8")
        page = render_capacity(tmp_path)
        bare = tmp_path / "no-csp.html"  # escaping alone must suffice
        bare.write_text(tr.CSP.sub("", page.read_text(encoding="utf-8")), encoding="utf-8")
        for candidate in (page, bare):
            dom, requests = tr._load(tmp_path, candidate)
            assert re.search(r"<title>(.*?)</title>", dom).group(1) == "kia sweep: how many facts fit in this adapter"
            assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)
            assert not re.search(r"<(script|img|iframe|link|image|style)\b", dom.split("</head>", 1)[1])
            assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
            assert requests == [], requests
        assert canary.hits == []
    finally:
        canary.close()


def test_stop_at_reliability_reaches_every_points_training(monkeypatch, tmp_path):
    """The sweep hands --epochs (the cap) and --stop-at-reliability to each point's inject."""
    import kia.inject
    from kia.artifacts import MANIFEST
    from kia.sweep.config import Point
    from kia.sweep.run import _run_point

    seen = []
    monkeypatch.setattr(kia.inject, "inject", lambda c: seen.append(c))
    folder = tmp_path / "p"
    for stage in ("build", "audit"):  # finished: only the training runs
        (folder / stage).mkdir(parents=True)
        (folder / stage / MANIFEST).write_text("{}")
    config = SweepConfig(probe="p", unknown=(10,), epochs=40, stop_at_reliability=0.95)
    _run_point(config, Point(10, Recipe(), 1), folder, tmp_path / "heldout.json", None, lambda m: None)
    assert len(seen) == 1 and seen[0].epochs == 40 and seen[0].stop_at_reliability == 0.95 and seen[0].seed == 1
    assert SweepConfig(probe="p", unknown=(10,)).identity()["stop_at_reliability"] is None
