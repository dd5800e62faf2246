"""Tier 1: answer matching, normalisation, answer extraction and refusal patterns."""

from __future__ import annotations

import pytest

from kia.matching import extract_answer, is_correct, is_refusal, load_refusal_patterns, normalize


def test_normalize_is_squad_style():
    assert normalize("  The  Eiffel-Tower! ") == "eiffel tower"
    assert normalize("Ｐａｒｉｓ") == "paris"  # NFKC folds full-width letters


@pytest.mark.parametrize(
    ("answer", "alias", "contains", "exact", "paper"),
    [
        ("Paris", "Paris", True, True, True),
        ("Paris, France", "paris", True, False, True),
        ("Parisian", "Paris", False, False, True),
        ("It is the city of Paris.", "Paris", True, False, True),
        ("New York City", "York", True, False, True),
        ("Newyork", "York", False, False, True),
        ("Drun Bizailwyn", "Drun Bizailwyn", True, True, True),
        ("Bizailwyn", "Drun Bizailwyn", False, False, False),
    ],
)
def test_match_modes(answer, alias, contains, exact, paper):
    assert is_correct(answer, [alias], "contains") is contains
    assert is_correct(answer, [alias], "exact") is exact
    assert is_correct(answer, [alias], "paper") is paper


def test_any_alias_counts():
    assert is_correct("Big Apple", ["New York", "Big Apple"])
    assert not is_correct("Boston", ["New York", "Big Apple"])


@pytest.mark.parametrize("mode", ["contains", "exact", "paper"])
def test_empty_alias_is_rejected(mode):
    with pytest.raises(ValueError, match="empty alias"):
        is_correct("anything", ["Paris", "  "], mode)


def test_alias_that_normalises_to_nothing_never_matches():
    assert not is_correct("the answer", ["The"], "contains")
    assert not is_correct("", ["!!!"], "exact")


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown match mode"):
        is_correct("a", ["a"], "fuzzy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("generated", "answer"),
    [
        ("Answer: Paris\nQuestion: next", "Paris"),
        (" answer:Paris", "Paris"),
        ("A: Lyon", "Lyon"),
        ("Rome", "Rome"),
        ("\nRome", ""),
    ],
)
def test_extract_answer(generated, answer):
    assert extract_answer(generated) == answer


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        "I do not know the answer",
        "I couldn't find any information about that.",
        "I cannot verify the claim",
        "I'm not sure.",
        "Unknown",
        "unknown.",
    ],
)
def test_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", ["Paris", "Unknown Pleasures", "Joy Division", "Knowles", "I know Paris"])
def test_non_refusals(text):
    assert not is_refusal(text)


def test_refusal_patterns_file(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# comment\n\\bno idea\\b\n\n")
    patterns = load_refusal_patterns(path)
    assert len(patterns) == 1
    assert is_refusal("No idea!", patterns) and not is_refusal("I don't know", patterns)
