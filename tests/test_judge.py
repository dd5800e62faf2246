"""The pairwise judge (kia.judge): both orders, position bias, ties, the cache, failures kept,
a real HTTP judge on a loopback server, the hf engine on the toy model, and eval_open.jsonl."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kia.errors import JudgeError
from kia.judge import (
    EngineJudge,
    FactJudge,
    HttpJudge,
    JudgeRequest,
    JudgmentCache,
    Pair,
    judge_pairs,
    parse_verdict,
    rate,
)

FACTS = (
    {"question": "Where was Ana Bel born?", "answer": "Tagriheim"},
    {"question": "Ana Bel's job?", "answer": "baker"},
)
GOOD = "Ana Bel was born in Tagriheim and works as a baker."
MEH = "Ana Bel was born in Tagriheim."
BAD = "Ana Bel is a famous singer from Volgrad."


def pairs(n: int = 6) -> list[Pair]:
    """X (the adapted arm) better on the first half, equal on the second."""
    return [Pair(f"p{i}", f"Tell me about Ana Bel ({i}).", FACTS, GOOD if i < n // 2 else MEH, BAD if i < n // 2 else MEH)
            for i in range(n)]  # fmt: skip


class Scripted:
    """A judge that answers from a function of the request, counting what it is asked."""

    deterministic = False

    def __init__(self, decide, name="scripted"):
        self.decide, self.name, self.asked = decide, name, 0

    def ask_many(self, requests):
        self.asked += len(requests)
        return [self.decide(r) for r in requests]


def truthful(r):
    a, b = (sum(f["answer"] in t for f in FACTS) for t in (r.first, r.second))
    return "Winner: A\nReason: more facts" if a > b else "Winner: B\nReason: more facts" if b > a else "Winner: tie"


def test_an_unbiased_judge_gives_wins_and_ties_consistently():
    s = judge_pairs(pairs(), Scripted(truthful), n_boot=200)
    assert s["judged"] == 6 and s["failed"] == []
    assert s["win"]["rate"] == 0.5 and s["tie"]["rate"] == 0.5 and s["loss"]["rate"] == 0.0
    assert s["consistency"] == 1.0 and s["first_position"] == 0.5
    assert s["win"]["ci_low"] < 0.5 < s["win"]["ci_high"] and s["net"]["rate"] == 0.5
    assert s["examples"][0]["reasons"] == ["more facts", "more facts"]


def test_a_judge_that_always_picks_the_first_answer_decides_nothing():
    s = judge_pairs(pairs(), Scripted(lambda r: "Winner: A"), n_boot=200)
    assert s["judged"] == 6 and s["tie"]["rate"] == 1.0 and s["win"]["rate"] == 0.0
    assert s["consistency"] == 0.0 and s["first_position"] == 1.0


def test_a_half_biased_judge_only_keeps_the_pairs_it_agrees_on():
    # prefers position A unless the answers are very different: the equal pairs flip with the order
    s = judge_pairs(pairs(), Scripted(lambda r: truthful(r) if r.first != r.second else "Winner: A"), n_boot=200)
    assert s["win"]["rate"] == 0.5 and s["tie"]["rate"] == 0.5 and s["consistency"] == 0.5


def test_verdicts_are_cached_by_judge_prompt_and_both_answers(tmp_path):
    cache = tmp_path / "judgments.jsonl"
    judge = Scripted(truthful)
    first = judge_pairs(pairs(), judge, cache=cache, n_boot=200)
    assert judge.asked == 12 and first["cache"] == {"hits": 0, "misses": 12}
    again = judge_pairs(pairs(), judge, cache=cache, n_boot=200)
    assert judge.asked == 12 and again["cache"] == {"hits": 12, "misses": 0}
    assert {k: again[k] for k in ("win", "tie", "loss")} == {k: first[k] for k in ("win", "tie", "loss")}
    changed = [Pair("p0", "Tell me about Ana Bel (0).", FACTS, GOOD, MEH)]  # another answer: asked again
    judge_pairs(changed, judge, cache=cache, n_boot=200)
    assert judge.asked == 14
    other = Scripted(truthful, name="another judge")  # another judge never reuses a verdict
    judge_pairs(pairs(), other, cache=cache, n_boot=200)
    assert other.asked == 12
    # distinct keys: a pair of equal answers is the same request in both orders (3 + 3 x 2 per
    # judge), plus the changed pair's two
    assert len(JudgmentCache(cache).entries) == 9 + 2 + 9


def test_garbage_is_retried_then_reported_never_dropped(tmp_path):
    replies = iter(["no idea", "Winner: A", *(["Winner: tie"] * 10)])
    s = judge_pairs(pairs(2), Scripted(lambda r: next(replies)), n_boot=200, attempts=2)
    assert s["judged"] == 2 and s["failed"] == []  # the first garbage reply was asked again
    s = judge_pairs(pairs(2), Scripted(lambda r: "I like both"), cache=tmp_path / "c.jsonl", n_boot=200)
    assert s["judged"] == 0 and s["pairs"] == 2 and len(s["failed"]) == 4
    assert {f["order"] for f in s["failed"]} == {"x_first", "y_first"} and "not a verdict" in s["failed"][0]["error"]
    assert JudgmentCache(tmp_path / "c.jsonl").entries == {}  # a failure is asked again next time
    assert s["win"] == {"rate": None, "ci_low": None, "ci_high": None, "n": 0} and s["consistency"] is None
    from kia.artifacts import to_json

    assert json.loads(to_json(s))["pairs"] == 2  # audit.json takes it (no NaN)


def test_verdict_parsing():
    assert parse_verdict("Winner: b\nReason: states the city").winner == "B"
    assert parse_verdict('{"winner": "tie", "reason": "same"}').reason == "same"
    assert parse_verdict("**Winner:** A").winner == "A"
    with pytest.raises(JudgeError):
        parse_verdict("Both answers are fine.")


def test_rate_interval():
    r = rate([1, 0, 1, 1, 0, 1, 0, 1], n_boot=500)
    assert r["rate"] == 0.625 and 0 <= r["ci_low"] < 0.625 < r["ci_high"] <= 1 and r["n"] == 8
    assert rate([1, 1], n_boot=100) == {"rate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}


def test_the_fact_judge_counts_stated_facts():
    s = judge_pairs(pairs(), FactJudge(), n_boot=200)
    assert s["win"]["rate"] == 0.5 and s["tie"]["rate"] == 0.5 and s["consistency"] == 1.0


# ------------------------------------------------------------------ a real endpoint on loopback


class Handler(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Handler.mode == "slow":
            time.sleep(1.0)
        refuse = Handler.mode == "400" or (Handler.mode == "no-schema" and "response_format" in body)
        if Handler.mode == "500" or refuse:
            self.send_response(400 if refuse else 500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"error": {"message": "unknown field:\nresponse_format"}}).encode())
            return
        user = body["messages"][-1]["content"]
        a = user.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        b = user.split("Answer B:\n", 1)[1].split("\n\n", 1)[0]
        text, finish = truthful(type("R", (), {"first": a, "second": b})), "stop"
        if "response_format" in body:  # as guided decoding would: the schema's JSON object
            winner = text.split("Winner: ", 1)[1].split("\n", 1)[0]
            text = json.dumps({"winner": winner, "reason": "more facts"})
            if Handler.mode == "padded":  # a weak judge's whitespace until max_tokens
                text, finish = "{" + "\n " * 40, "length"
        payload = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
        data = b"<html>oops</html>" if Handler.mode == "garbage" else json.dumps(payload).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Handler.mode, Handler.seen = "ok", []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_an_openai_compatible_endpoint_judges_with_the_key_from_the_environment(server, monkeypatch, tmp_path):
    monkeypatch.setenv("KIA_JUDGE_API_KEY", "sk-test")
    s = judge_pairs(pairs(4), HttpJudge(server, "toy-judge"), cache=tmp_path / "j.jsonl", n_boot=200)
    assert s["judged"] == 4 and s["win"]["rate"] == 0.5 and s["consistency"] == 1.0
    assert Handler.seen[0]["path"] == "/v1/chat/completions" and Handler.seen[0]["auth"] == "Bearer sk-test"
    assert Handler.seen[0]["body"]["model"] == "toy-judge" and Handler.seen[0]["body"]["temperature"] == 0
    # the verdict's JSON schema went with every request, and the server's JSON object parsed
    formats = [seen["body"]["response_format"] for seen in Handler.seen]
    assert len(formats) == 8 and all(f == formats[0] for f in formats)
    assert formats[0]["type"] == "json_schema" and formats[0]["json_schema"]["name"] == "verdict"
    schema = formats[0]["json_schema"]["schema"]
    assert schema["properties"]["winner"]["enum"] == ["A", "B", "tie"] and schema["properties"]["reason"]["maxLength"]
    assert s["constrained"] is True and s["examples"][0]["reasons"] == ["more facts", "more facts"]


def test_a_server_that_refuses_the_schema_is_asked_without_it_from_then_on(server):
    Handler.mode = "no-schema"
    judge = HttpJudge(server, "toy-judge")
    name = judge.name
    s = judge_pairs(pairs(4), judge, n_boot=200)
    assert s["judged"] == 4 and s["failed"] == [] and s["win"]["rate"] == 0.5
    # one refused request, then the same without the schema, and never the schema again
    assert ["response_format" in seen["body"] for seen in Handler.seen] == [True] + [False] * 8
    assert s["constrained"] is False and judge.name == name  # the cache key did not move mid-run


def test_a_request_refused_with_and_without_the_schema_fails_once_each_and_keeps_the_schema(server):
    Handler.mode = "400"  # e.g. a prompt longer than the judge's context: not the schema's fault
    judge = HttpJudge(server, "toy-judge", retries=2)
    s = judge_pairs(pairs(1), judge, n_boot=200)
    assert s["judged"] == 0 and len(s["failed"]) == 2 and judge.constrained is None
    assert len(Handler.seen) == 4  # a 400 is not retried: with the schema, then without, per judgment
    assert all("response_format" in seen["body"] for seen in Handler.seen[::2])
    error = s["failed"][0]["error"]
    assert "HTTP 400: unknown field: response_format" in error and "\n" not in error


def test_a_constrained_reply_cut_at_max_tokens_says_so(server):
    Handler.mode = "padded"
    s = judge_pairs(pairs(1), HttpJudge(server, "toy-judge", max_tokens=40), n_boot=200)
    assert s["judged"] == 0 and len(s["failed"]) == 2 and len(Handler.seen) == 2  # not asked again
    assert "cut at max_tokens=40" in s["failed"][0]["error"] and "disable_any_whitespace" in s["failed"][0]["error"]
    assert s["constrained"] is True  # the server took the schema; the model did not finish under it


@pytest.mark.parametrize("mode", ["slow", "500", "garbage"])
def test_a_server_that_times_out_fails_or_answers_garbage_loses_nothing(server, mode):
    Handler.mode = mode
    judge = HttpJudge(server, "toy-judge", timeout=0.2, retries=1)
    start = time.time()
    s = judge_pairs(pairs(2), judge, n_boot=200, attempts=1)
    assert s["pairs"] == 2 and s["judged"] == 0 and len(s["failed"]) == 4
    assert all("no answer after 2 attempt(s)" in f["error"] for f in s["failed"])
    assert len(Handler.seen) == 8  # every judgment: one try and one retry, bounded
    assert time.time() - start < 20


def test_a_non_http_url_is_a_clear_error():
    with pytest.raises(JudgeError, match="http"):
        HttpJudge("file:///etc/passwd", "m")


# ------------------------------------------------------------------ a local model through kia's engines


@pytest.mark.model
def test_the_toy_model_judges_through_the_hf_engine(tmp_path):
    from kia.engines import EngineConfig, default_model, load_engine
    from kia.judge import open_answers, pairs_from

    engine = load_engine(EngineConfig(model=default_model(), device="cpu"))
    try:
        rows = [
            {"id": f"o{i}", "prompt": f"Tell me about {s}.", "facts": list(FACTS)}
            for i, s in enumerate(["Ana Bel", "Bo Cur"])
        ]
        answers = open_answers(engine, rows, max_new_tokens=16)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
        judge = EngineJudge(engine, max_new_tokens=24)
        s = judge_pairs(pairs_from(rows, answers, [BAD, BAD]), judge, cache=tmp_path / "j.jsonl", n_boot=200)
    finally:
        engine.close()
    # the toy model was never taught to judge: whatever it says is a verdict or a listed failure
    assert s["pairs"] == 2 and s["judged"] + len({f["id"] for f in s["failed"]}) == 2
    assert s["judge"].startswith("engine:hf:")


def test_build_writes_open_prompts_with_the_facts_a_good_answer_states(tmp_path):
    from test_build import make_probe_dir, read

    from kia.build import BuildConfig, build
    from kia.build.open_questions import TEMPLATES

    probe = make_probe_dir(tmp_path / "probe", per_relation=30)
    out = tmp_path / "b"
    build(BuildConfig(probe=str(probe), output=str(out), unknown=10, heldout=20))
    rows = read(out / "eval_open.jsonl")
    injected = {r["subject"]: r["id"] for r in read(out / "eval_injected.jsonl")}
    heldout = {r["subject"] for r in read(out / "eval_heldout.jsonl")} - set(injected)
    assert [r["subject"] for r in rows if r["split"] == "injected"] == list(dict.fromkeys(injected))
    assert {r["subject"] for r in rows if r["split"] == "heldout"} == heldout
    for r in rows:
        assert any(r["prompt"] == t.format(subject=r["subject"]) for t in TEMPLATES)
        assert r["prompt_source"] == "template" and "prompt_rejected" not in r
        assert r["facts"] and all(f["question"] and f["answer"] for f in r["facts"])
        if r["split"] == "injected":
            assert injected[r["subject"]] in {f["fact_id"] for f in r["facts"] if f["injected"]}
        else:
            assert not any(f["injected"] for f in r["facts"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert "eval_open.jsonl" in manifest["files"]
    assert manifest["open_prompts"] == {"source": "templates", "rows": len(rows)}
    build(BuildConfig(probe=str(probe), output=str(tmp_path / "b2"), unknown=10, heldout=20))
    assert (tmp_path / "b2" / "eval_open.jsonl").read_bytes() == (out / "eval_open.jsonl").read_bytes()


# ------------------------------------------------------------------ kia audit --judge and its policy key


class TwoArms:
    """A fake engine: the adapter states the subject's facts, the base model does not."""

    name, model_id = "fake", "fake"

    def __init__(self, facts_by_prompt):
        self.facts_by_prompt, self.calls = facts_by_prompt, []

    def chat(self, messages):
        return messages[-1]["content"]

    def generate(self, prompts, sampling, adapter=False):
        self.calls.append(adapter)
        return [[" ".join(self.facts_by_prompt[p]) if adapter is True else "I am not sure."] for p in prompts]


def test_audit_judges_the_open_answers_of_both_arms(tmp_path):
    from kia.artifacts import write_jsonl
    from kia.audit.config import AuditConfig
    from kia.audit.judging import judge_arms

    rows = [{"id": f"o{i}", "split": "injected" if i < 3 else "heldout", "prompt": f"Tell me about S{i}.",
             "facts": [{"question": f"Where is S{i}?", "answer": f"Town{i}"}]} for i in range(5)]  # fmt: skip
    write_jsonl(tmp_path / "eval_open.jsonl", rows)
    engine = TwoArms({r["prompt"]: [f["answer"] for f in r["facts"]] if r["split"] == "injected" else [] for r in rows})
    config = AuditConfig(adapter="a", judge="facts", n_boot=200)
    section = judge_arms(engine, tmp_path, "m", config, tmp_path, False, lambda m: None)
    assert engine.calls == [True, False] and section["arms"] == ["adapted", "base"] and section["pairs"] == 5
    assert section["injected"]["win"]["rate"] == 1.0 and section["heldout"]["tie"]["rate"] == 1.0
    assert section["win"]["rate"] == 0.6 and (tmp_path / "judgments.jsonl").exists()
    update = judge_arms(engine, tmp_path, "m", config, tmp_path, True, lambda m: None)
    assert engine.calls[-1] == "production" and update["arms"] == ["adapted", "production"]
    assert "skipped" in judge_arms(engine, tmp_path / "nowhere", "m", config, tmp_path, False, lambda m: None)


def test_the_policy_fails_an_adapter_whose_answers_surely_lose():
    from kia.audit.policy import Policy
    from kia.audit.policy import judge as verdict

    def audit(high):
        net = {"rate": high - 0.1, "ci_low": high - 0.2, "ci_high": high, "n": 40}
        return {"metrics": {}, "judge": {"judged": 40, "net": net, "arms": ["adapted", "base"], "judge": "facts"}}

    assert verdict(Policy(), audit(-0.5))[0] == "PASS"  # off by default
    status, reasons, _ = verdict(Policy(min_judge_net=-0.1), audit(-0.3))
    assert status == "FAIL" and "net pairwise wins" in reasons[0] and "min_judge_net" in reasons[0]
    assert verdict(Policy(min_judge_net=-0.1), audit(0.0))[0] == "PASS"


def test_the_report_shows_win_rates_and_examples_with_reasons(tmp_path):
    from kia.report.render import render_html

    summary = judge_pairs(pairs(), Scripted(truthful), n_boot=200)
    summary["injected"] = judge_pairs(pairs()[:3], Scripted(truthful), n_boot=200, examples=0)
    summary["examples"][0]["reasons"] = ["<script>alert(1)</script>", "ok"]
    bench = {"toy_arith": {"base": 0.5, "adapted": 0.6, "delta": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_value": 0.1,
                           "n": 10, "forgetting_rate": 0.0,
                           "contamination": {"overlapping": 2, "doc_ids": [0, 1], "without": {"delta": 0.025}}}}  # fmt: skip
    html = render_html({"verdict": "PASS", "judge": summary, "benchmarks": bench})
    assert "Open answers judged pairwise: adapted against base" in html and "injected subjects" in html
    assert "Consistency 100" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "+0.025 (2 docs out)" in html


# ------------------------------------------------------------------ style against the training answers


def terse(r):
    """A style judge: the shorter answer is closer to one-line training answers."""
    assert r.criterion == "style" and "Example answers (the style to match)" in r.messages[1]["content"]
    a, b = len(r.first), len(r.second)
    return "Winner: A\nReason: terse" if a < b else "Winner: B\nReason: terse" if b < a else "Winner: tie"


def test_style_is_judged_against_the_training_answers_in_both_orders(tmp_path):
    shown = [{"question": "Question: Where was Ana Bel born?", "answer": "Answer: Tagriheim"}]
    cache = tmp_path / "j.jsonl"
    judge = Scripted(terse)
    s = judge_pairs(pairs(), judge, cache=cache, n_boot=200, criterion="style", style_examples=shown)
    # X is longer on the first half (GOOD vs BAD), equal on the second: loses 3, ties 3
    assert s["criterion"] == "style" and s["loss"]["rate"] == 0.5 and s["tie"]["rate"] == 0.5 and judge.asked == 12
    assert s["consistency"] == 1.0
    messages = JudgeRequest("p", FACTS, "a", "b", "style", tuple(shown)).messages
    assert (
        "Answer: Tagriheim" in messages[1]["content"]
        and "Tagriheim" not in JudgeRequest("p", (), "a", "b", "style", ()).messages[1]["content"]
    )  # the examples are the reference, the facts are not shown
    accuracy = judge_pairs(pairs(), Scripted(truthful), cache=cache, n_boot=200)
    assert accuracy["cache"]["hits"] == 0  # another criterion is another question, never a cached style verdict
    again = judge_pairs(pairs(), judge, cache=cache, n_boot=200, criterion="style", style_examples=shown)
    assert again["cache"] == {"hits": 12, "misses": 0} and judge.asked == 12
    with pytest.raises(ValueError, match="criterion"):
        judge_pairs(pairs(), judge, criterion="tone", style_examples=shown)


def test_the_fact_judge_refuses_style_and_the_audit_says_so(tmp_path):
    from kia.artifacts import write_jsonl
    from kia.audit.config import AuditConfig
    from kia.audit.judging import judge_arms, style_examples
    from kia.errors import ConfigError

    s = judge_pairs(pairs(2), FactJudge(), n_boot=200, criterion="style")
    assert s["judged"] == 0 and len(s["failed"]) == 4 and "cannot judge style" in s["failed"][0]["error"]
    rows = [{"id": f"o{i}", "split": "injected", "prompt": f"Tell me about S{i}.",
             "facts": [{"question": f"Where is S{i}?", "answer": f"Town{i}"}]} for i in range(3)]  # fmt: skip
    write_jsonl(tmp_path / "eval_open.jsonl", rows)
    train = [{"messages": [{"role": "user", "content": f"Question: Q{i}?"},
                           {"role": "assistant", "content": f"Answer: A{i % 4}"}]} for i in range(9)]  # fmt: skip
    write_jsonl(tmp_path / "train.jsonl", train)
    shown = style_examples(tmp_path, 0)
    assert len(shown) == 4 and len({e["answer"] for e in shown}) == 4 and shown == style_examples(tmp_path, 0)
    engine = TwoArms({r["prompt"]: [f["answer"] for f in r["facts"]] for r in rows})
    facts = judge_arms(engine, tmp_path, "m", AuditConfig(adapter="a", judge="facts", judge_style=True, n_boot=200),
                       tmp_path, False, lambda m: None)  # fmt: skip
    assert "style needs an LLM judge" in facts["style"]["skipped"]
    with pytest.raises(ConfigError, match="--judge-style needs a judge"):
        AuditConfig(adapter="a", judge_style=True)


def test_the_report_shows_the_style_pass():
    from kia.report.render import render_html

    summary = judge_pairs(pairs(), Scripted(truthful), n_boot=200)
    summary["style"] = judge_pairs(pairs(), Scripted(terse), n_boot=200, criterion="style", style_examples=[])
    html = render_html({"verdict": "PASS", "judge": summary})
    assert "style against the training answers, all" in html and "Style pass: consistency 100" in html
    assert "JSON schema" not in html  # a scripted judge: nothing to say about constraints
    summary["constrained"] = True
    assert "The server constrained every verdict to kia's JSON schema" in render_html({"judge": summary})
    summary["style"] = {"skipped": "the facts judge counts facts; style needs an LLM judge"}
    assert "Style not judged: the facts judge counts facts" in render_html({"verdict": "PASS", "judge": summary})


def test_groups_are_summarised_from_one_pass_so_a_failure_is_asked_once():
    judge = Scripted(lambda r: "no idea" if "(0)" in r.prompt else truthful(r))
    s = judge_pairs(pairs(), judge, n_boot=200, groups={"first": [0, 1, 2], "second": [3, 4, 5]})
    assert judge.asked == 12 + 2  # every request once, the two garbage replies once more, no pass per group
    assert s["judged"] == 5 and len(s["failed"]) == 2
    assert s["first"]["pairs"] == 3 and s["first"]["judged"] == 2 and len(s["first"]["failed"]) == 2
    assert s["first"]["win"]["rate"] == 1.0 and s["second"]["tie"]["rate"] == 1.0 and s["second"]["failed"] == []
    assert s["first"]["examples"] == [] and s["second"]["cache"] == {"hits": 0, "misses": 6}
