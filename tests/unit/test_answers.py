"""SQuAD/HotpotQA answer metrics against hand-computed values."""

import pytest

from mtr.answers import exact_match, f1_score, normalize_answer


def test_normalize_follows_squad_order():
    assert normalize_answer("  The  Eiffel-Tower!  ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    # Articles only as whole words: "theory" and "another" keep their letters.
    assert normalize_answer("Theory of another") == "theory of another"
    # Punctuation is removed before articles, so "the." is still an article.
    assert normalize_answer("the. end") == "end"


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("the Beatles.", ["Beatles"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0


def test_exact_match_takes_best_alias():
    assert exact_match("NYC", ["New York City", "nyc"]) == 1.0
    assert exact_match("Boston", ["New York City", "nyc"]) == 0.0


def test_f1_partial_overlap():
    # prediction tokens: [new, york]; gold: [new, york, city] -> P=1, R=2/3, F1=0.8
    assert f1_score("New York", ["New York City"]) == pytest.approx(0.8)
    assert f1_score("Paris", ["London"]) == 0.0


def test_f1_counts_repeated_tokens_once_per_match():
    # common = min counts: {a: 0 (article), b: 1}; prediction "b b", gold "b c" -> P=1/2, R=1/2
    assert f1_score("b b", ["b c"]) == pytest.approx(0.5)


def test_f1_takes_best_alias():
    assert f1_score("New York", ["Big Apple", "New York"]) == 1.0


def test_f1_yes_no_rule_gives_no_partial_credit():
    assert f1_score("no", ["yes"]) == 0.0
    assert f1_score("yes it is", ["yes"]) == 0.0  # gold is "yes", prediction differs
    assert f1_score("Yes.", ["yes"]) == 1.0
    assert f1_score("noanswer", ["no answer"]) == 0.0


def test_empty_or_string_golds_are_rejected():
    with pytest.raises(ValueError, match="empty list of gold"):
        exact_match("x", [])
    with pytest.raises(TypeError, match="single string"):
        f1_score("x", "x")
