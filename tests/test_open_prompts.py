"""kia build --open-prompts model: an LLM writes eval_open's prompts, each screened, a rejected one
falling back to its template; through a scripted engine, and once through the hf engine on the toy model."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from test_build import cli, make_probe_dir, read

from kia.build import BuildConfig, build
from kia.build.open_questions import TEMPLATES, screen_request
from kia.errors import ConfigError
from kia.facts import Fact

ANA = (
    Fact("f1", "Where was Ana Bel born?", ("Tagriheim", "Tagri"), subject="Ana Bel", relation="birthplace"),
    Fact("f2", "Who employs Ana Bel?", ("Volco",), subject="Ana Bel", relation="employer"),
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Answer: Tell me about Ana Bel and her life.", None),
        ('1. "What can you tell me about ana bel?"', None),  # list marker, quotes, case
        ("Tell me why Ana Bel left Tagriheim.", "leaks_answer"),
        ("Does Ana Bel still work at volco?", "leaks_answer"),  # any fact of the subject, any case
        ("Is Ana Bel from Tagri?", "leaks_answer"),  # any alias
        ("", "empty"),
        ("Request:  ", "empty"),
        ("Sure!\nTell me about Ana Bel.", "multi_line"),
        ("Tell me about the weather.", "subject_missing"),
        ("Ana Bel?", "length"),
        ("Tell me about Ana Bel " + "and more " * 20, "length"),
    ],
)
def test_the_screen(text, reason):
    assert screen_request(text, "Ana Bel", ANA)[1] == reason


def test_an_answer_inside_the_subjects_own_name_is_no_leak():
    paris = Fact("p", "Where does Paris Hilton live?", ("Paris",), subject="Paris Hilton")
    text = "Tell me about Paris Hilton."
    assert screen_request(text, "Paris Hilton", [paris]) == (text, None)
    assert screen_request("Does Paris Hilton live in Paris?", "Paris Hilton", [paris])[1] == "leaks_answer"


KINDS = ("good", "leak", "empty", "off", "lines", "long")


def reply(kind: str, subject: str, answer: str) -> str:
    return {
        "good": f"Could you tell me what is known about {subject}?",
        "leak": f"Tell me how {subject} is connected to {answer}.",
        "empty": "",
        "off": "Tell me about a famous person.",
        "lines": f"Sure, here is one.\nTell me about {subject}.",
        "long": f"Tell me about {subject}" + " and so on" * 20,
    }[kind]


def test_model_prompts_are_screened_and_fall_back_to_templates(tmp_path, monkeypatch):
    from kia.engines.scripted import ScriptedEngine

    probe = make_probe_dir(tmp_path / "probe", per_relation=30)
    kw = dict(probe=str(probe), unknown=8, heldout=12, eval_paraphrases=0, seed=3)
    build(BuildConfig(output=str(tmp_path / "t"), **kw))
    plain = read(tmp_path / "t" / "eval_open.jsonl")
    assert {r["prompt_source"] for r in plain} == {"template"}
    # ScriptedEngine answers the last prompt line's text after ": ", here the subject's name
    kind = {r["subject"]: KINDS[i % len(KINDS)] for i, r in enumerate(plain)}
    engine = ScriptedEngine({r["subject"]: reply(kind[r["subject"]], r["subject"], r["facts"][0]["answer"])
                             for r in plain})  # fmt: skip
    asked = []
    monkeypatch.setattr("kia.engines.load_engine", lambda cfg: asked.append(cfg.model) or engine)
    result = build(BuildConfig(output=str(tmp_path / "m"), open_prompts="model", paraphrase_model="para", **kw))
    rows = read(tmp_path / "m" / "eval_open.jsonl")
    assert asked == ["para"] and engine.n_generated == len(plain)  # one greedy request per subject
    # the model changes prompt texts only: same rows, ids, subjects and facts, in the same order
    strip = ("prompt", "prompt_source", "prompt_rejected")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in plain
    ]
    why = {"leak": "leaks_answer", "empty": "empty", "off": "subject_missing", "lines": "multi_line", "long": "length"}
    for r, t in zip(rows, plain, strict=True):
        k = kind[r["subject"]]
        if k == "good":
            assert r["prompt_source"] == "model" and r["prompt"] == reply(k, r["subject"], "")
            assert "prompt_rejected" not in r
        else:  # the template the seed picked for it, and what the model wrote, with the reason
            assert r["prompt_source"] == "template" and r["prompt"] == t["prompt"]
            assert r["prompt_rejected"]["reason"] == why[k]
    n = len(rows)
    expect = {why[k]: sum(kind[r["subject"]] == k for r in rows) for k in KINDS[1:]}
    report = json.loads((tmp_path / "m" / "manifest.json").read_text())["open_prompts"]
    assert report == result.open_prompts
    assert report["source"] == "model" and report["model"] == "para" and report["rows"] == n
    assert report["kept"] == sum(kind[r["subject"]] == "good" for r in rows) > 0
    assert report["fell_back"] == n - report["kept"] and report["rejected"] == expect
    assert any(f"{n - report['kept']} of {n} open prompts written by para" in w for w in result.warnings)
    assert result.recipe["open_prompts"] == "model"


def test_the_open_prompt_model_and_its_errors(tmp_path, monkeypatch):
    from kia.engines.scripted import ScriptedEngine

    probe = make_probe_dir(tmp_path / "probe", per_relation=10)
    asked = []
    monkeypatch.setattr("kia.engines.load_engine", lambda cfg: asked.append(cfg.model) or ScriptedEngine({}))
    kw = dict(probe=str(probe), unknown=2, heldout=2, eval_paraphrases=0, open_prompts="model")
    build(BuildConfig(output=str(tmp_path / "a"), open_prompt_model="mine", paraphrase_model="para", **kw))
    build(BuildConfig(output=str(tmp_path / "b"), **kw))
    assert asked == ["mine", "toy"]  # its own flag, else --paraphrase-model, else the probe's model
    # "I don't know." names no subject: everything falls back, nothing is lost
    assert all(r["prompt_source"] == "template" for r in read(tmp_path / "b" / "eval_open.jsonl"))
    with pytest.raises(ConfigError, match="--open-prompts"):
        BuildConfig(probe="p", unknown=1, open_prompts="llm")
    manifest = json.loads((probe / "manifest.json").read_text())
    manifest["model"] = None
    (probe / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="--open-prompt-model"):
        build(BuildConfig(output=str(tmp_path / "c"), **kw))
    assert not (tmp_path / "c").exists()  # refused before the output folder is claimed


def test_cli_open_prompts(tmp_path, monkeypatch):
    from kia.engines.scripted import ScriptedEngine

    probe = make_probe_dir(tmp_path / "probe", per_relation=10)
    monkeypatch.setattr("kia.engines.load_engine", lambda cfg: ScriptedEngine({}, default="Tell me about it."))
    args = ["build", str(probe), "-o", str(tmp_path / "b"), "--unknown", "2", "--heldout", "2"]
    res = CliRunner().invoke(cli(), [*args, "--eval-paraphrases", "0", "--open-prompts", "model", "--json"])
    assert res.exit_code == 0, res.output
    op = json.loads(res.output)["open_prompts"]
    assert op["kept"] == 0 and op["rejected"] == {"subject_missing": op["rows"]}
    res = CliRunner().invoke(cli(), [*args, "--open-prompts", "llm"])
    assert res.exit_code == 2 and "templates" in res.output


@pytest.mark.model
def test_the_toy_model_writes_open_prompts_through_the_hf_engine(tmp_path):
    from kia.engines import default_model

    probe = make_probe_dir(tmp_path / "probe", per_relation=10)
    kw = dict(probe=str(probe), unknown=3, heldout=3, eval_paraphrases=0, seed=1, open_prompts="model",
              open_prompt_model=default_model(), benchmarks=("none",))  # fmt: skip
    start = time.time()
    result = build(BuildConfig(output=str(tmp_path / "a"), **kw))
    seconds = time.time() - start
    rows = read(tmp_path / "a" / "eval_open.jsonl")
    injected = {r["subject"] for r in read(tmp_path / "a" / "eval_injected.jsonl")}
    heldout = {r["subject"] for r in read(tmp_path / "a" / "eval_heldout.jsonl")}
    # a weak model: whatever it writes, every subject keeps one prompt that names it
    assert {r["subject"] for r in rows} == injected | heldout and len(rows) == len(injected | heldout)
    assert all(r["subject"] in r["prompt"] and r["facts"] for r in rows)
    assert all((r["prompt_source"] == "template") == ("prompt_rejected" in r) for r in rows)
    assert all(r["prompt"] in {t.format(subject=r["subject"]) for t in TEMPLATES} for r in rows
               if r["prompt_source"] == "template")  # fmt: skip
    op = result.open_prompts
    assert op["kept"] + op["fell_back"] == op["rows"] == len(rows) and sum(op["rejected"].values()) == op["fell_back"]
    build(BuildConfig(output=str(tmp_path / "b"), **kw))
    assert (tmp_path / "b" / "eval_open.jsonl").read_bytes() == (tmp_path / "a" / "eval_open.jsonl").read_bytes()
    print(f"toy model open prompts: {op}, first build {seconds:.1f} s")
    for r in rows:
        print(r["prompt_source"], repr(r["prompt"]), r.get("prompt_rejected"))
