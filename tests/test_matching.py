"""Tier 1: answer matching, normalisation, answer extraction and refusal patterns."""

from __future__ import annotations

import re

import pytest

from kia.errors import ConfigError
from kia.facts import matching
from kia.facts.matching import extract_answer, is_correct, is_refusal, load_refusal_patterns, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The  Eiffel Tower! ", "eiffel tower"),
        ("Ｐａｒｉｓ", "paris"),  # NFKC folds full-width letters
        ("A Tale of Two Cities", "tale of two cities"),
        ("an apple, the pear; a fig.", "apple pear fig"),
        ("U.S.", "us"),  # SQuAD deletes punctuation
        ("Don’t «Stop»", "dont stop"),  # Unicode punctuation counts too
        ("Theatre", "theatre"),  # articles only as whole words
        ("¿Qué?", "qué"),
        ("", ""),
        ("The!!!", ""),
    ],
)
def test_normalize_is_squad_style(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("answer", "alias", "contains", "exact", "paper"),
    [
        ("Paris", "Paris", True, True, True),
        ("paris.", "Paris", True, True, True),
        ("Paris, France", "paris", True, False, True),
        ("Parisian", "Paris", False, False, True),
        ("It is the city of Paris.", "Paris", True, False, True),
        ("New York City", "York", True, False, True),
        ("Newyork", "York", False, False, True),
        ("The Beatles", "Beatles", True, True, True),
        ("Drun Bizailwyn", "Drun Bizailwyn", True, True, True),
        ("Bizailwyn", "Drun Bizailwyn", False, False, False),
        ("Port au Prince", "Port-au-Prince", True, True, False),  # punctuation read as a space
        ("US", "U.S.", True, True, False),  # punctuation deleted, as SQuAD
        ("Paris's mayor", "Paris", True, False, True),
        ("ＰＡＲＩＳ", "Paris", True, True, False),  # NFKC before comparing
        ("Lyon", "Paris", False, False, False),
    ],
)
def test_match_modes(answer, alias, contains, exact, paper):
    assert is_correct(answer, [alias], "contains") is contains
    assert is_correct(answer, [alias], "exact") is exact
    assert is_correct(answer, [alias], "paper") is paper


def test_default_mode_is_contains_and_any_alias_counts():
    assert is_correct("Big Apple", ["New York", "Big Apple"])
    assert not is_correct("Boston", ["New York", "Big Apple"])
    assert is_correct("Paris, France", ["Paris"]) and not is_correct("Parisian", ["Paris"])
    assert not is_correct("Paris", [])
    assert is_correct("Paris", "Paris")  # a bare string is one alias, not a list of letters
    assert not is_correct("P", "Paris")


@pytest.mark.parametrize("mode", ["contains", "exact", "paper"])
@pytest.mark.parametrize("bad", ["", "  ", "\n\t"])
def test_empty_alias_is_rejected(mode, bad):
    with pytest.raises(ValueError, match="empty alias would match every answer"):
        is_correct("anything", ["Paris", bad], mode)


def test_alias_that_normalises_to_nothing_never_matches():
    for mode in ("contains", "exact"):
        assert not is_correct("the answer", ["The"], mode)
        assert not is_correct("", ["!!!"], mode)
        assert not is_correct("!!!", ["!!!"], mode)
        assert is_correct("Paris", ["!!!", "Paris"], mode)  # other aliases still count
    assert is_correct("the answer", ["The"], "paper")  # raw substring, as the paper's code


def test_paper_mode_strips_and_lowercases_the_alias_only():
    assert is_correct("The city is PARIS", ["  paris "], "paper")
    assert not is_correct("Pa ris", ["Paris"], "paper")


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown match mode 'fuzzy'"):
        is_correct("a", ["a"], "fuzzy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("generated", "answer"),
    [
        ("Answer: Paris\nQuestion: next", "Paris"),
        (" answer:Paris", "Paris"),
        ("ANSWER :  Paris  ", "Paris"),
        ("A: Lyon", "Lyon"),
        ("a:Lyon\n", "Lyon"),
        ("Rome", "Rome"),
        ("  Rome  \n\nMore text", "Rome"),
        ("Answer: Answer: x", "Answer: x"),  # one prefix only
        ("Anne Boleyn", "Anne Boleyn"),
        ("\nRome", ""),  # only the first line counts
        ("", ""),
    ],
)
def test_extract_answer(generated, answer):
    assert extract_answer(generated) == answer


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        "I don’t know",  # curly apostrophe
        "I do not know the answer",
        "I couldn't find any information about that.",
        "I could not find information on Drun.",
        "I cannot verify the claim",
        "I can't verify that.",
        "I'm not sure.",
        "Not sure",
        "I am not sure who that is",
        "There is no information about this person.",
        "There is no publicly available information on that.",
        "I am unable to answer.",
        "I'm unable to determine that.",
        "I don't have any information about Drun.",
        "I'm sorry, but I can't help with that.",
        "Unknown",
        "unknown.",
        " (Unknown) ",
    ],
)
def test_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    ["Paris", "Unknown Pleasures", "The Unknown Soldier", "Joy Division", "Knowles", "I know Paris", "Informatics", ""],
)
def test_non_refusals(text):
    assert not is_refusal(text)


def test_refusal_patterns_file(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# comment\n\\bno idea\\b\n\n   # indented comment\n")
    patterns = load_refusal_patterns(path)
    assert [p.pattern for p in patterns] == [r"\bno idea\b"] and patterns[0].flags & re.IGNORECASE
    assert is_refusal("No IDEA!", patterns) and not is_refusal("I don't know", patterns)


def test_refusal_pattern_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# ok\n\\bfine\\b\n(unclosed\n")
    with pytest.raises(ConfigError, match=r"r\.txt:3: invalid refusal pattern"):
        load_refusal_patterns(path)
    with pytest.raises(ConfigError, match="cannot read refusal patterns"):
        load_refusal_patterns(tmp_path / "missing.txt")


def test_default_patterns_come_from_the_repo_file_and_match_the_builtin_copy():
    assert matching.DEFAULT_REFUSALS.is_file()
    default = load_refusal_patterns()
    assert [p.pattern for p in default] == list(matching._BUILTIN_REFUSALS)
    assert [p.pattern for p in load_refusal_patterns(matching.DEFAULT_REFUSALS)] == list(matching._BUILTIN_REFUSALS)


def test_builtin_fallback_when_the_file_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(matching, "DEFAULT_REFUSALS", tmp_path / "absent.txt")
    matching._default_patterns.cache_clear()
    try:
        assert [p.pattern for p in load_refusal_patterns()] == list(matching._BUILTIN_REFUSALS)
        assert is_refusal("I don't know") and not is_refusal("Unknown Pleasures")
    finally:
        matching._default_patterns.cache_clear()
