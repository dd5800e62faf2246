"""The bias report: answer concentration, entropy, relation shares and the warnings they raise."""

from __future__ import annotations

import math

import pytest

from kia.build.bias import answer_counts, bias_report, normalized_entropy


def rows(answers, prefix="f"):
    return [{"fact_id": f"{prefix}{i}", "answer": a} for i, a in enumerate(answers)]


def relations(n, of=lambda i: f"r{i % 4}", prefix="f"):
    return {f"{prefix}{i}": of(i) for i in range(n)}


def test_normalized_entropy_formula():
    assert normalized_entropy({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert normalized_entropy({"a": 5, "b": 5, "c": 5}) == pytest.approx(1.0)
    assert normalized_entropy({"a": 1}) == 0.0 and normalized_entropy({}) == 0.0
    p = [0.9, 0.1]
    assert normalized_entropy({"a": 9, "b": 1}) == pytest.approx(-sum(x * math.log(x) for x in p) / math.log(2))


def test_answers_are_counted_normalised():
    counts, display = answer_counts(["Paris", "paris.", "The Paris", "Lyon"])
    assert counts == {"paris": 3, "lyon": 1} and display["paris"] == "Paris"


def test_balanced_mixture_stays_quiet():
    report = bias_report(rows([f"A{i}" for i in range(100)]), relations(100))
    assert report["warnings"] == []
    assert report["answer_entropy"] == pytest.approx(1.0) and report["top_share"] == 0.01
    assert report["relations"] == {"r0": 25, "r1": 25, "r2": 25, "r3": 25}
    assert report["mean_count_per_answer"] == 1.0 and report["std_count_per_answer"] == 0.0


def test_skewed_answers_warn_and_cite_the_collapse():
    answers = ["Paris" if i < 30 else f"A{i}" for i in range(100)]
    report = bias_report(rows(answers), relations(100))
    assert report["top_answers"][0] == {"answer": "Paris", "count": 30, "share": 0.3}
    assert len(report["top_answers"]) == 10 and report["answer_entropy"] < 0.9
    [warning] = report["warnings"]
    assert "'Paris' is 30 of 100 training rows (30.0%, threshold 5%)" in warning and "collapse" in warning
    assert bias_report(rows(answers), relations(100), max_top_share=0.5)["warnings"] == []


def test_ten_unknown_facts_alone_warn_as_in_the_paper():
    # 10 UK + 0 HK: each answer is 10% of the data, the mixture the paper saw collapse ("Alençon").
    report = bias_report(rows([f"A{i}" for i in range(10)]), relations(10))
    assert any("Alençon" in w for w in report["warnings"])
    # 10 UK + 10 HK per fact: 110 rows, each answer under 1%
    assert bias_report(rows([f"A{i}" for i in range(110)]), relations(110))["warnings"] == []


def test_one_relation_holding_most_rows_warns():
    rel = relations(100, of=lambda i: "r0" if i < 60 else "r1")
    report = bias_report(rows([f"A{i}" for i in range(100)]), rel)
    assert report["top_relation"] == {"relation": "r0", "count": 60, "share": 0.6}
    assert any("relation 'r0' holds 60 of 100" in w for w in report["warnings"])
    # a probe with a single relation has nothing to balance
    single = relations(100, of=lambda i: "r0")
    assert bias_report(rows([f"A{i}" for i in range(100)]), single, available_relations=1)["warnings"] == []
    # facts without relations are not a relation
    assert bias_report(rows([f"A{i}" for i in range(100)]), {})["warnings"] == []
