"""The openai backend reading answers in every shape real servers send
(tests/annotator/recorded/shapes/), servers without logprobs, and the minimum choice mass."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from annotator.backends.openai_wire import (
    InvalidAnswer,
    first_token_logprobs,
    text_choice,
)
from tests.annotator.openai_helpers import YES_NO, fast_backend, user_chat
from tests.doubles.shared_models import smollm2_transformers_backend

SHAPES = Path(__file__).parent / "recorded" / "shapes"


# ---- answer shapes of real servers ----------------------------------------------------------


def _shape(name: str) -> dict:
    return json.loads((SHAPES / f"{name}.json").read_text())


SHAPE_NAMES = sorted(p.stem for p in SHAPES.glob("*.json"))


def test_every_server_shape_has_a_fixture():
    assert {
        "openai_chat", "legacy_shape_on_chat", "legacy_completions", "llamacpp_chat",
        "llamacpp_completions_legacy", "llamacpp_native_logprob", "llamacpp_native_post_sampling",
        "llamacpp_native_pre2025", "llamacpp_bytes_only", "llama_cpp_python_chat", "vllm_chat",
        "vllm_completions", "token_markers", "non_finite_entries", "low_mass", "logprobs_null",
    } <= set(SHAPE_NAMES)  # fmt: skip


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_recorded_shapes_give_the_right_probabilities(scripted, name):
    shape = _shape(name)
    answer = shape["answer"]
    scripted.canned = answer  # the server replays this answer to every request
    scripted.listed_models = [answer["model"]]
    backend = fast_backend(scripted, endpoint=shape["endpoint"])
    prompt = user_chat("Is fire hot?") if shape["endpoint"] == "chat" else "Is fire hot?\nAnswer:"
    (got,) = asyncio.run(backend.choice_probs([prompt], YES_NO))
    assert got == pytest.approx(shape["expect"], abs=1e-9)
    assert backend.stats.invalid == (0 if shape["expect"] else 1)
    assert backend.stats.failed == 0
    assert backend.model_id == f"{answer['model']}@{scripted.base_url}"
    notices = [k for k, _ in backend.drain_notices()]
    assert notices == (["no_logprobs"] if name == "logprobs_null" else [])


def test_the_measured_fault_legacy_shape_on_chat_is_read():
    # a chat endpoint answering in the completions shape gave Yes -0.4, No -1.1
    top = first_token_logprobs(_shape("legacy_shape_on_chat")["answer"])
    assert top == [("Yes", -0.4), ("No", -1.1), ("I", -2.3)]


def test_non_finite_entries_are_skipped_and_markers_cleaned():
    top = first_token_logprobs(_shape("non_finite_entries")["answer"])
    assert top == [("Yes", -0.4), ("No", -1.1)]
    markers = first_token_logprobs(_shape("token_markers")["answer"])
    assert [t for t, _ in markers] == [" Yes", " No", " yes"]
    probs = first_token_logprobs(_shape("llamacpp_native_post_sampling")["answer"])
    assert probs == [(" Yes", pytest.approx(math.log(0.6))), (" No", pytest.approx(math.log(0.3)))]
    # nothing finite at all: readable, but empty (an invalid answer, not a crash)
    answer = {"choices": [{"logprobs": {"content": [{"token": "Yes", "logprob": None}]}}]}
    assert first_token_logprobs(answer) == []


def test_logprobs_absent_and_unreadable():
    assert first_token_logprobs({"choices": [{"text": "Yes", "logprobs": None}]}) is None
    assert first_token_logprobs({"choices": [{"message": {"content": "No"}}]}) is None
    assert first_token_logprobs({"choices": [{"logprobs": {"content": None}}]}) is None
    for bad in ({"choices": []}, {"choices": [{"logprobs": 7}]},
                {"choices": [{"logprobs": {"content": "nonsense", "top_logprobs": 7}}]},
                {"choices": [{"logprobs": {"something": "else"}}]}, {"unexpected": "shape"}):  # fmt: skip
        with pytest.raises(InvalidAnswer):
            first_token_logprobs(bad)


def test_text_choice_reads_the_first_word():
    assert text_choice("Yes, because it burns.", YES_NO) == 0
    assert text_choice("  no.", YES_NO) == 1
    assert text_choice("**Yes**", YES_NO) == 0
    assert text_choice("y", YES_NO) == 0  # a prefix of exactly one choice
    assert text_choice("The answer is yes", YES_NO) is None
    assert text_choice("", YES_NO) is None and text_choice(None, YES_NO) is None


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_legacy_shape_from_the_server_on_either_endpoint(scripted, endpoint):
    scripted.logprob_shape = "legacy"
    backend = fast_backend(scripted, endpoint=endpoint)
    prompt = user_chat("Is fire hot?") if endpoint == "chat" else "Is fire hot?\nAnswer:"
    (fire,) = asyncio.run(backend.choice_probs([prompt], YES_NO))
    assert fire == pytest.approx({"yes": 0.7 / 0.9, "no": 0.2 / 0.9})
    assert backend.stats.invalid == 0


def test_server_without_logprobs_switches_to_the_answer_text_and_says_so_once(scripted):
    scripted.logprob_shape = "null"
    backend = fast_backend(scripted)
    first = asyncio.run(backend.choice_probs([user_chat("fire"), user_chat("ice")], YES_NO))
    assert first == [{"yes": 1.0, "no": 0.0}, {"yes": 0.0, "no": 1.0}]
    assert backend.text_mode
    second = asyncio.run(backend.choice_probs([user_chat("fire again")], YES_NO))
    assert second == [{"yes": 1.0, "no": 0.0}]
    body = scripted.requests[-1]
    assert body["max_tokens"] == backend.TEXT_MODE_MAX_TOKENS > 1
    assert "logprobs" not in body and "top_logprobs" not in body
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["no_logprobs"]
    assert scripted.base_url in notices[0][1] and "answer text" in notices[0][1]
    assert backend.stats.invalid == 0


def test_text_mode_answer_naming_no_choice_is_invalid(scripted):
    scripted.logprob_shape = "null"
    scripted.scorer.rules["odd"] = {"Perhaps": 0.9}
    backend = fast_backend(scripted)
    assert asyncio.run(backend.choice_probs([user_chat("odd")], YES_NO)) == [{}]
    assert backend.stats.invalid == 1


# ---- minimum choice mass -------------------------------------------------------------------


def test_choices_with_too_little_mass_are_invalid(scripted):
    # top 5 with "Yes" fifth at 0.7 % and "No" absent: no answer, not P(yes) = 1
    scripted.scorer.rules["essay"] = {
        "The": 0.6,
        "I": 0.2,
        "This": 0.1,
        "Based": 0.093,
        "Yes": 0.007,
    }
    default = fast_backend(scripted)
    assert asyncio.run(default.choice_probs([user_chat("essay")], YES_NO)) == [{}]
    assert default.stats.invalid == 1 and default.stats.failed == 0
    lenient = fast_backend(scripted, min_choice_mass=0.0)
    assert asyncio.run(lenient.choice_probs([user_chat("essay")], YES_NO)) == [
        {"yes": 1.0, "no": 0.0}
    ]
    strict = fast_backend(scripted, min_choice_mass=0.95)  # fire: 0.9 on the choices
    assert asyncio.run(strict.choice_probs([user_chat("fire")], YES_NO)) == [{}]
    with pytest.raises(ValueError, match="min_choice_mass"):
        fast_backend(scripted, min_choice_mass=1.5)


@pytest.mark.llm
def test_transformers_backend_applies_min_choice_mass():
    tf = smollm2_transformers_backend()  # SmolLM2 puts 0.2-0.35 on yes/no for these prompts
    chat = user_chat("Is fire hot? Answer yes or no.")
    before = tf.stats.invalid
    tf.min_choice_mass = 0.99
    try:
        assert asyncio.run(tf.choice_probs([chat], YES_NO)) == [{}]
    finally:
        tf.min_choice_mass = 0.1
    assert tf.stats.invalid == before + 1
    (ok,) = asyncio.run(tf.choice_probs([chat], YES_NO))
    assert ok and sum(ok.values()) == pytest.approx(1.0)
