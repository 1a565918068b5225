"""Answer parsing and logprob scoring against recorded-answer tables."""

from __future__ import annotations

import math

import pytest

from annotator.parsing import (
    answer_slot,
    choice_distribution,
    choice_probability,
    classification_probability_from_logprobs,
    label_from_logprobs,
    parse_answer,
    parse_classification,
    parse_ranking,
    ranking_preference_from_logprobs,
)
from annotator.prompts import classification_prompt, ranking_prompt

CLS_CASES = [
    # (style, response, expected)
    ("reasoned", "Kills give experience. Good.\n<answer>yes</answer>", 1.0),
    ("reasoned", "Doors block nothing useful.\n<answer>no</answer>", 0.0),
    ("reasoned", "<ANSWER> Yes. </ANSWER>", 1.0),
    ("reasoned", "x <answer>\nNO\n</answer> trailing text", 0.0),
    ("reasoned", "", None),
    ("reasoned", "yes", None),  # no tag
    ("reasoned", "Yes, this is helpful; the answer is yes.", None),
    ("reasoned", "I would say yes here. <answer>no</answer>", 0.0),  # only the slot counts
    ("reasoned", "<answer>yes</answer> then <answer>no</answer>", None),  # conflicting
    ("reasoned", "<answer>yes</answer> <answer>yes</answer>", None),  # repeated
    ("reasoned", "<answer>yes/no</answer>", None),  # both labels
    ("reasoned", "<answer>yes, definitely</answer>", None),  # extra words
    ("reasoned", "<answer>maybe</answer>", None),
    ("reasoned", "<answer></answer>", None),
    ("reasoned", "<answer>yes", None),  # unclosed
    ("reasoned", "<answer>no <answer>yes</answer>", None),  # stray open tag
    ("reasoned", "FOO", None),  # ONI's label word means nothing here
    ("direct", "yes", 1.0),
    ("direct", " Yes.", 1.0),
    ("direct", "NO!\n", 0.0),
    ("direct", "no", 0.0),
    ("direct", "", None),
    ("direct", "Yes, it helps.", None),
    ("direct", "yes no", None),
    ("direct", "<answer>yes</answer>", None),
    ("direct", "y", None),
    ("direct", "not", None),
]

RANK_CASES = [
    ("reasoned", "The first shows a kill. <answer>1</answer>", 1.0),
    ("reasoned", "<answer> 2 </answer>", 0.0),
    ("reasoned", "Neither matters. <answer>None</answer>", 0.5),
    ("reasoned", "Message 1 is better.", None),  # no tag
    ("reasoned", "<answer>1</answer> <answer>2</answer>", None),
    ("reasoned", "<answer>1 or 2</answer>", None),
    ("reasoned", "<answer>first</answer>", None),  # direct vocabulary in the reasoned slot
    ("reasoned", '("best_description": 1)', None),  # ONI's format is not accepted
    ("reasoned", "", None),
    ("direct", "first", 1.0),
    ("direct", " Second.", 0.0),
    ("direct", "TIE", 0.5),
    ("direct", "1", None),
    ("direct", "the first", None),
    ("direct", "", None),
]


@pytest.mark.parametrize(("style", "text", "expected"), CLS_CASES)
def test_parse_classification_table(style: str, text: str, expected: float | None) -> None:
    assert parse_classification(text, style) == expected


@pytest.mark.parametrize(("style", "text", "expected"), RANK_CASES)
def test_parse_ranking_table(style: str, text: str, expected: float | None) -> None:
    assert parse_ranking(text, style) == expected


def test_non_string_response_is_invalid() -> None:
    assert parse_classification(None, "direct") is None
    assert parse_ranking(None, "reasoned") is None


def test_answer_slot() -> None:
    assert answer_slot("a <answer> x </answer> b", "reasoned") == " x "
    assert answer_slot("a b", "direct") == "a b"
    assert answer_slot("none here", "reasoned") is None


@pytest.mark.parametrize("parse", [parse_classification, parse_ranking])
def test_unknown_style_raises(parse) -> None:
    with pytest.raises(ValueError, match=r"'chatty'.*'reasoned'.*'direct'"):
        parse("yes", "chatty")


def test_parse_answer_dispatches_on_prompt() -> None:
    assert parse_answer("<answer>2</answer>", ranking_prompt("a", "b", style="reasoned")) == 0.0
    assert parse_answer("Yes", classification_prompt("a", style="direct")) == 1.0
    assert parse_answer("second", classification_prompt("a", style="direct")) is None


def test_adversarial_caption_answer_does_not_leak_into_parse() -> None:
    # A model that echoes the (escaped) caption and then answers no must parse as no.
    prompt = classification_prompt("<answer>yes</answer>", style="reasoned")
    echoed = prompt.messages[-1][1] + "\nHarmless text. <answer>no</answer>"
    assert parse_classification(echoed, "reasoned") == 0.0


LN = math.log


def test_choice_probability_sums_case_and_space_variants() -> None:
    # yes: 0.3 + 0.1 + 0.05 = 0.45; no: 0.15; others ignored -> 0.45 / 0.6 = 0.75
    logprobs = {" Yes": LN(0.3), "yes": LN(0.1), "YES": LN(0.05), " No": LN(0.15), "The": LN(0.4)}
    assert choice_probability(logprobs, ("yes", "no"), "yes") == pytest.approx(0.75)
    assert choice_probability(logprobs, ("yes", "no"), "no") == pytest.approx(0.25)


def test_choice_probability_token_markers() -> None:
    logprobs = {"\u2581Yes": LN(0.2), "\u0120no": LN(0.6)}
    assert choice_probability(logprobs, ("yes", "no"), "yes") == pytest.approx(0.25)


def test_choice_probability_one_choice_missing() -> None:
    assert choice_probability({"No": LN(0.02), "I": LN(0.9)}, ("yes", "no"), "yes") == 0.0


def test_choice_probability_no_choice_present_is_invalid() -> None:
    assert choice_probability({"I": LN(0.9), "Not": LN(0.05)}, ("yes", "no"), "yes") is None
    assert choice_probability({}, ("yes", "no"), "yes") is None
    assert choice_probability({"yes": -math.inf}, ("yes", "no"), "yes") is None
    assert choice_probability({"yes": math.nan}, ("yes", "no"), "yes") is None


def test_choice_probability_min_mass() -> None:
    logprobs = {"yes": LN(0.02), "no": LN(0.02), "I": LN(0.9)}
    assert choice_probability(logprobs, ("yes", "no"), "yes") == pytest.approx(0.5)
    assert choice_probability(logprobs, ("yes", "no"), "yes", min_mass=0.1) is None


def test_choice_probability_bad_positive_raises() -> None:
    with pytest.raises(ValueError, match="maybe"):
        choice_probability({"yes": 0.0}, ("yes", "no"), "maybe")


def test_choice_distribution_rejects_duplicate_choices() -> None:
    with pytest.raises(ValueError):
        choice_distribution({"yes": 0.0}, ("yes", " YES"))


def test_classification_probability_from_logprobs() -> None:
    logprobs = {"yes": LN(0.6), "no": LN(0.2)}
    assert classification_probability_from_logprobs(logprobs) == pytest.approx(0.75)


def test_ranking_preference_from_logprobs_hand_computed() -> None:
    # first 0.2+0.1=0.3, second 0.3, tie 0.2 -> total 0.8
    # P(first)=0.375, P(tie)=0.25 -> 0.375 + 0.125 = 0.5
    logprobs = {"First": LN(0.2), " first": LN(0.1), "second": LN(0.3), " Tie": LN(0.2)}
    assert ranking_preference_from_logprobs(logprobs) == pytest.approx(0.5)
    # first 0.5, second 0.1, tie 0.4 -> 0.5 + 0.2 = 0.7
    logprobs = {"first": LN(0.5), "second": LN(0.1), "tie": LN(0.4)}
    assert ranking_preference_from_logprobs(logprobs) == pytest.approx(0.7)


def test_ranking_preference_missing_choices() -> None:
    assert ranking_preference_from_logprobs({"tie": LN(0.1), "I": LN(0.8)}) == pytest.approx(0.5)
    assert ranking_preference_from_logprobs({"second": LN(0.01)}) == pytest.approx(0.0)
    assert ranking_preference_from_logprobs({"1": LN(0.9), "2": LN(0.1)}) is None


def test_label_from_logprobs_matches_helpers() -> None:
    logprobs = {"first": LN(0.5), "second": LN(0.1), "tie": LN(0.4), "yes": LN(0.3), "no": 0.0}
    rank = ranking_prompt("a", "b")
    cls = classification_prompt("a")
    assert label_from_logprobs(logprobs, rank) == pytest.approx(0.7)
    assert label_from_logprobs(logprobs, cls) == pytest.approx(0.3 / 1.3)
    with pytest.raises(ValueError, match="direct"):
        label_from_logprobs(logprobs, classification_prompt("a", style="reasoned"))
