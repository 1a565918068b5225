"""The openai backend against a real HTTP server on 127.0.0.1 (tests/doubles/openai_server.py):
readiness, numbers equal to the transformers backend's, outages, slowness, garbage; answers in
every shape real servers send (tests/annotator/recorded/shapes/), servers without logprobs, the
minimum choice mass, Retry-After and which errors are retried, the served model, the API key."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from annotator.backends import BackendUnavailable, make_backend
from annotator.backends.openai_retry import retry_after_s, retryable
from annotator.backends.openai_wire import (
    InvalidAnswer,
    first_token_logprobs,
    pick_listed_model,
    text_choice,
)
from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers, TransformersScorer
from tests.doubles.shared_models import smollm2_transformers_backend

YES_NO = ["yes", "no"]
SHAPES = Path(__file__).parent / "recorded" / "shapes"


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _fast(server: OpenAICompatServer, **options):
    """A backend with short timeouts and back-off, so fault tests take a second, not minutes."""
    defaults = dict(
        request_timeout=2.0, connect_timeout=0.5, max_retries=2,
        backoff_initial=0.05, backoff_max=0.2,
    )  # fmt: skip
    defaults.update(options)
    return make_backend("openai", base_url=server.base_url, **defaults)


@pytest.fixture
def scripted():
    answers = ScriptedAnswers(
        rules={"fire": {"Yes": 0.6, "yes": 0.1, "No": 0.2}, "ice": {"No": 0.8, "Yes": 0.1}},
        model_name="scripted",
    )
    with OpenAICompatServer(answers) as server:
        yield server


# ---- readiness ----------------------------------------------------------------------------


def test_wait_ready_discovers_the_model(scripted):
    backend = _fast(scripted)
    names = asyncio.run(backend.wait_ready(timeout=5))
    assert names == ["scripted"]
    assert backend.model == "scripted"
    assert backend.model_id == f"scripted@{scripted.base_url}"


def test_wait_ready_times_out_with_a_clear_error_and_succeeds_once_the_server_is_up():
    server = OpenAICompatServer(ScriptedAnswers(model_name="late"))
    server.start()
    server.stop()  # reserve a port, then go down
    backend = _fast(server)

    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"GET http://127\.0\.0\.1:\d+/v1/models.*0.5 s"):
        asyncio.run(backend.wait_ready(timeout=0.5, poll_interval=0.1))
    assert time.monotonic() - t0 < 3

    timer = threading.Timer(0.4, server.start)
    timer.start()
    try:
        assert asyncio.run(backend.wait_ready(timeout=10, poll_interval=0.1)) == ["late"]
    finally:
        timer.join()
        server.stop()


def test_wrong_model_name_is_reported(scripted):
    backend = _fast(scripted, model="other")
    with pytest.raises(BackendUnavailable, match="'other'"):
        asyncio.run(backend.wait_ready(timeout=2))
    # through a request: no answer, and the user is told once what to change
    assert asyncio.run(backend.choice_probs([_chat("a"), _chat("b")], YES_NO)) == [None, None]
    asyncio.run(backend.choice_probs([_chat("c")], YES_NO))
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["model_not_served"]
    assert "annotator.model" in notices[0][1] and "'other'" in notices[0][1]
    assert scripted.requests == []


def test_llama_server_listing_its_gguf_path_serves_the_configured_model(scripted):
    # llama-server lists the .gguf it loaded as the model id and answers whatever name it gets
    path = "/models/SmolLM2-135M-Instruct-Q4_1.gguf"
    scripted.listed_models, scripted.any_model = [path], True
    for configured in ("smollm2", "SmolLM2-135M-Instruct-Q4_1"):
        backend = _fast(scripted, model=configured)
        (r,) = asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
        assert r["yes"] == pytest.approx(0.7 / 0.9)
        assert scripted.requests[-1]["model"] == path  # the name the server listed
        assert backend.model_id == f"{path}@{scripted.base_url}"
        assert backend.drain_notices() == []


def test_models_route_refusing_the_key_is_told_not_polled_for(scripted):
    scripted.models_status = 401
    backend = _fast(scripted, api_key="sk-wrong", request_timeout=30)
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [None]
    assert scripted.models_requests == 1  # refused at once, not polled until the 30 s timeout
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["http_401"] and "api_key_env" in notices[0][1]


def test_server_without_a_models_route_is_asked_for_the_configured_model(scripted):
    scripted.models_status = 404
    backend = _fast(scripted, model="scripted")
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))[0]
    assert backend.model_id == f"scripted@{scripted.base_url}"


def test_pick_listed_model():
    gguf = "/m/Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    assert pick_listed_model(None, ["a", "b"]) == "a"
    assert pick_listed_model("b", ["a", "b"]) == "b"
    assert pick_listed_model("Llama-3.1-8B-Instruct-Q4_K_M", [gguf, "other"]) == gguf
    assert pick_listed_model("Llama-3.1-8B-Instruct-Q4_K_M.gguf", [gguf, "x.gguf"]) == gguf
    assert pick_listed_model("anything", [gguf]) == gguf  # one file served: llama.cpp
    assert pick_listed_model("other", ["served-name"]) is None  # vLLM would answer 404
    assert pick_listed_model("other", [gguf, "/m/x.gguf"]) is None  # which one? refuse


# ---- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_choice_probs_from_top_logprobs(scripted, endpoint):
    backend = _fast(scripted, endpoint=endpoint)
    chats = [_chat("Is fire hot?"), _chat("Is ice hot?")] if endpoint == "chat" else [
        "Is fire hot?\nAnswer:", "Is ice hot?\nAnswer:"
    ]  # fmt: skip
    fire, ice = asyncio.run(backend.choice_probs(chats, YES_NO))
    assert fire == pytest.approx({"yes": 0.7 / 0.9, "no": 0.2 / 0.9})  # "Yes" + "yes" summed
    assert ice == pytest.approx({"yes": 0.1 / 0.9, "no": 0.8 / 0.9})
    body = scripted.requests[-1]
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    if endpoint == "chat":
        assert body["logprobs"] is True and body["top_logprobs"] == 5
    else:
        assert body["logprobs"] == 5


def test_structured_choice_sends_vllm_field_and_always_answers(scripted):
    # the double behaves like vLLM 0.32: the choice grammar masks tokens before the logprobs,
    # so only the exact spellings ("yes", not "Yes") and their prefixes are left
    scripted.scorer.rules["weird"] = {"Maybe": 0.5, "Perhaps": 0.3, "I": 0.1, "The": 0.05}
    scripted.scorer.rules["both"] = {"yes": 0.2, "n": 0.1, "no": 0.1, "Yes": 0.5}
    plain = _fast(scripted)
    forced = _fast(scripted, structured_choice=True)
    assert asyncio.run(plain.choice_probs([_chat("weird question")], YES_NO)) == [
        {}
    ]  # answered, but no choice among the top tokens: invalid
    assert plain.stats.invalid == 1
    (weird,) = asyncio.run(forced.choice_probs([_chat("weird question")], YES_NO))
    assert scripted.requests[-1]["structured_outputs"] == {"choice": YES_NO}
    assert weird == {"yes": 1.0, "no": 0.0}  # the forced answer
    (both,) = asyncio.run(forced.choice_probs([_chat("both")], YES_NO))
    assert both == pytest.approx({"yes": 0.5, "no": 0.5})  # "n" counts for "no"
    assert forced.stats.invalid == 0


def test_empty_batch_sends_nothing(scripted):
    backend = _fast(scripted)
    assert asyncio.run(backend.choice_probs([], YES_NO)) == []
    assert asyncio.run(backend.generate([], max_tokens=2)) == []
    assert scripted.requests == []


def test_generate_chat_and_completions(scripted):
    chat = asyncio.run(_fast(scripted).generate([_chat("fire?")], max_tokens=4))
    cmpl = asyncio.run(_fast(scripted, endpoint="completions").generate(["ice?"], max_tokens=4))
    assert chat == ["Yes"] and cmpl == ["No"]


def test_completions_endpoint_needs_a_template_for_chats(scripted):
    backend = _fast(scripted, endpoint="completions")
    with pytest.raises(ValueError, match="chat_template_model"):
        asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))


def test_many_requests_in_flight_at_once(scripted):
    scripted.delay_s = 0.2
    backend = _fast(scripted, max_concurrency=16)
    results = asyncio.run(backend.choice_probs([_chat(f"fire {i}") for i in range(32)], YES_NO))
    assert all(r is not None for r in results)
    # Counted by the server, not timed: requests overlap, and never more than max_concurrency.
    assert 1 < scripted.max_in_flight <= 16


# ---- faults -------------------------------------------------------------------------------


def test_server_stopped_mid_run_gives_none_after_bounded_retries_then_recovers(scripted):
    scripted.delay_s = 0.1
    backend = _fast(scripted, max_concurrency=2)
    chats = [_chat(f"fire {i}") for i in range(20)]

    async def run_and_stop():
        task = asyncio.create_task(backend.choice_probs(chats, YES_NO))
        await asyncio.sleep(0.25)
        await asyncio.to_thread(scripted.stop)
        t0 = time.monotonic()
        results = await task
        return results, time.monotonic() - t0

    results, after_stop = asyncio.run(run_and_stop())
    assert any(r is not None for r in results)  # answered before the stop
    assert any(r is None for r in results)  # failed after the retries
    assert backend.stats.retries > 0
    # 18 requests, 2 at a time, each: 3 refused connections + 2 back-offs <= 0.4 s
    assert after_stop < 10

    scripted.start()  # the server comes back: labelling resumes
    again = asyncio.run(backend.choice_probs(chats, YES_NO))
    assert all(r is not None for r in again)


def test_request_succeeds_when_the_server_returns_during_the_retries(scripted):
    backend = _fast(scripted, max_retries=8, backoff_initial=0.1, backoff_max=0.3)
    asyncio.run(backend.wait_ready(timeout=5))  # the model is known; then the server goes
    scripted.stop()
    timer = threading.Timer(0.5, scripted.start)
    timer.start()
    try:
        (r,) = asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
    finally:
        timer.join()
    assert r is not None and r["yes"] > r["no"]


def test_unreachable_server_never_raises():
    server = OpenAICompatServer(ScriptedAnswers())
    server.start()
    server.stop()
    backend = _fast(server, model="scripted-model", request_timeout=0.5)
    t0 = time.monotonic()
    assert asyncio.run(backend.choice_probs([_chat("a"), _chat("b")], YES_NO)) == [None, None]
    assert asyncio.run(backend.generate([_chat("a")], max_tokens=3)) == [None]
    assert time.monotonic() - t0 < 5
    assert backend.stats.failed == 3


def test_undiscoverable_model_gives_none():
    server = OpenAICompatServer(ScriptedAnswers())
    server.start()
    server.stop()
    backend = _fast(server, request_timeout=0.5)
    assert asyncio.run(backend.choice_probs([_chat("a")], YES_NO)) == [None]


def test_slow_server_times_out_and_gives_none(scripted):
    scripted.delay_s = 1.5
    backend = _fast(scripted, request_timeout=0.3, max_retries=1, model="scripted")
    t0 = time.monotonic()
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [None]
    assert time.monotonic() - t0 < 2.0  # 2 attempts x 0.3 s + back-off
    assert backend.stats.retries == 1


@pytest.mark.parametrize("mode", ["text", "json", "logprobs"])
def test_garbage_answers_are_invalid_not_failed(scripted, mode):
    scripted.garbage = mode
    backend = _fast(scripted, model="scripted")
    # An answer arrived but names no choice: {} (invalid), never None (a failed request).
    assert asyncio.run(backend.choice_probs([_chat("fire"), _chat("ice")], YES_NO)) == [{}, {}]
    assert asyncio.run(backend.generate([_chat("fire")], max_tokens=2)) == [
        "" if mode != "logprobs" else "Yes"
    ]
    assert backend.stats.failed == 0
    assert backend.stats.invalid >= 2
    assert backend.stats.retries == 0  # garbage is not retried


def test_server_errors_are_retried_then_none(scripted):
    scripted.fail_status = 503
    backend = _fast(scripted, model="scripted")
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [None]
    assert backend.stats.retries == 2
    scripted.fail_status = None
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))[0] is not None


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
    backend = _fast(scripted, endpoint=shape["endpoint"])
    prompt = _chat("Is fire hot?") if shape["endpoint"] == "chat" else "Is fire hot?\nAnswer:"
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
    backend = _fast(scripted, endpoint=endpoint)
    prompt = _chat("Is fire hot?") if endpoint == "chat" else "Is fire hot?\nAnswer:"
    (fire,) = asyncio.run(backend.choice_probs([prompt], YES_NO))
    assert fire == pytest.approx({"yes": 0.7 / 0.9, "no": 0.2 / 0.9})
    assert backend.stats.invalid == 0


def test_server_without_logprobs_switches_to_the_answer_text_and_says_so_once(scripted):
    scripted.logprob_shape = "null"
    backend = _fast(scripted)
    first = asyncio.run(backend.choice_probs([_chat("fire"), _chat("ice")], YES_NO))
    assert first == [{"yes": 1.0, "no": 0.0}, {"yes": 0.0, "no": 1.0}]
    assert backend.text_mode
    second = asyncio.run(backend.choice_probs([_chat("fire again")], YES_NO))
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
    backend = _fast(scripted)
    assert asyncio.run(backend.choice_probs([_chat("odd")], YES_NO)) == [{}]
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
    default = _fast(scripted)
    assert asyncio.run(default.choice_probs([_chat("essay")], YES_NO)) == [{}]
    assert default.stats.invalid == 1 and default.stats.failed == 0
    lenient = _fast(scripted, min_choice_mass=0.0)
    assert asyncio.run(lenient.choice_probs([_chat("essay")], YES_NO)) == [{"yes": 1.0, "no": 0.0}]
    strict = _fast(scripted, min_choice_mass=0.95)  # fire: 0.9 on the choices
    assert asyncio.run(strict.choice_probs([_chat("fire")], YES_NO)) == [{}]
    with pytest.raises(ValueError, match="min_choice_mass"):
        _fast(scripted, min_choice_mass=1.5)


@pytest.mark.llm
def test_transformers_backend_applies_min_choice_mass():
    tf = smollm2_transformers_backend()  # SmolLM2 puts 0.2-0.35 on yes/no for these prompts
    chat = _chat("Is fire hot? Answer yes or no.")
    before = tf.stats.invalid
    tf.min_choice_mass = 0.99
    try:
        assert asyncio.run(tf.choice_probs([chat], YES_NO)) == [{}]
    finally:
        tf.min_choice_mass = 0.1
    assert tf.stats.invalid == before + 1
    (ok,) = asyncio.run(tf.choice_probs([chat], YES_NO))
    assert ok and sum(ok.values()) == pytest.approx(1.0)


# ---- server etiquette: what is retried, and how long to wait --------------------------------


def _patient(server: OpenAICompatServer, **options):
    """As _fast, with a long per-attempt timeout: a loaded machine's slow answer is no retry
    here, so the retries counted are the ones the statuses asked for."""
    return _fast(server, **{"request_timeout": 30.0, **options})


class FakeClock:
    """Records the waits the backend asks for instead of sleeping (no timed assertions)."""

    def __init__(self, now: float = 1_764_480_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def install(self, backend) -> None:
        backend._sleep, backend._now = self.sleep, lambda: self.now


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(scripted, status):
    scripted.fail_status, scripted.fail_count, scripted.retry_after = status, 2, "4"
    backend = _patient(scripted, max_retries=4, backoff_initial=0.3, backoff_max=10)
    clock = FakeClock()
    clock.install(backend)
    (r,) = asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
    assert r["yes"] == pytest.approx(0.7 / 0.9)
    assert clock.sleeps == [4.0, 4.0]  # not 0.3, 0.6 (the back-off)
    assert backend.stats.retries == 2 and scripted.failed_posts == 2


def test_retry_after_http_date_and_the_cap(scripted):
    clock = FakeClock()
    scripted.fail_status, scripted.fail_count = 503, 1
    scripted.retry_after = formatdate(clock.now + 3, usegmt=True)
    backend = _patient(scripted, backoff_max=10)
    clock.install(backend)
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))[0]
    assert clock.sleeps == [pytest.approx(3.0)]
    scripted.fail_count, scripted.retry_after = 1, "120"  # capped by backoff_max
    clock.sleeps.clear()
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))[0]
    assert clock.sleeps == [10.0]


def test_without_retry_after_the_back_off_doubles_with_jitter(scripted):
    scripted.fail_status = 502
    backend = _patient(scripted, max_retries=3, backoff_initial=0.5, backoff_max=1.5)
    clock = FakeClock()
    clock.install(backend)
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [None]
    assert len(clock.sleeps) == 3
    for wait, full in zip(clock.sleeps, [0.5, 1.0, 1.5], strict=True):
        assert 0.5 * full <= wait < full


def test_retry_after_parsing_and_retryable_statuses():
    now = 1_764_480_000.0
    assert retry_after_s("4", now) == 4.0
    assert retry_after_s(" 2.5 ", now) == 2.5
    assert retry_after_s(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert retry_after_s(formatdate(now - 60, usegmt=True), now) == 0.0  # already past
    for bad in (None, "", "soon", "-3", "nan", "inf"):
        assert retry_after_s(bad, now) is None
    assert [s for s in (400, 401, 403, 404, 408, 409, 413, 422, 429) if retryable(s)] == [408, 429]
    assert [s for s in (500, 501, 502, 503, 504, 505) if retryable(s)] == [500, 502, 503, 504]


@pytest.mark.parametrize(
    ("status", "advice"),
    [(400, "top_logprobs"), (401, "api_key_env"), (404, "annotator.model"), (422, "server's log")],
)
def test_client_errors_are_not_retried_and_told_once(scripted, status, advice):
    scripted.fail_status = status
    backend = _patient(scripted, model="scripted")
    clock = FakeClock()
    clock.install(backend)
    chats = [_chat("fire"), _chat("ice")]
    assert asyncio.run(backend.choice_probs(chats, YES_NO)) == [{}, {}]
    assert asyncio.run(backend.choice_probs(chats, YES_NO)) == [{}, {}]
    assert backend.stats.retries == 0 and clock.sleeps == [] and scripted.failed_posts == 4
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == [f"http_{status}"]
    assert advice in notices[0][1] and f"HTTP {status}" in notices[0][1]


def test_408_is_retried(scripted):
    scripted.fail_status, scripted.fail_count = 408, 1
    backend = _patient(scripted, model="scripted")
    clock = FakeClock()
    clock.install(backend)
    (r,) = asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
    assert r and backend.stats.retries == 1 and len(clock.sleeps) == 1
    assert backend.drain_notices() == []


# ---- the served model ------------------------------------------------------------------------


def test_model_id_follows_the_model_the_answers_name(scripted):
    backend = _fast(scripted)
    asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
    assert backend.model_id == f"scripted@{scripted.base_url}"
    assert backend.model_changes == 0 and backend.drain_notices() == []

    scripted.answer_model = "scripted-v2"  # the server now serves other weights
    asyncio.run(backend.choice_probs([_chat("fire"), _chat("ice")], YES_NO))
    assert backend.model_id == f"scripted-v2@{scripted.base_url}"
    assert backend.model_changes == 1
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["model_changed"]
    assert "'scripted-v2'" in notices[0][1] and "'scripted'" in notices[0][1]
    assert scripted.requests[-1]["model"] == "scripted"  # still asks by the listed name

    asyncio.run(backend.generate([_chat("fire")], max_tokens=2))
    assert backend.model_changes == 1  # same model again: no change


def test_explicit_model_id_is_kept_but_changes_are_still_told(scripted):
    backend = _fast(scripted, model_id="my-judge")
    scripted.answer_model = "other"
    asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))
    assert backend.model_id == "my-judge"
    assert backend.model == "other" and backend.model_changes == 1


# ---- the API key -----------------------------------------------------------------------------


def test_api_key_is_sent_but_never_shown(scripted, caplog):
    key = "sk-secret-abcdefgh12345678"
    backend = _fast(scripted, api_key=key)
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO))[0]
    assert scripted.authorization == f"Bearer {key}"

    scripted.fail_status = 401  # and the server echoes the key, as some do
    scripted.fail_message = f"Incorrect API key provided: {key}. Also ...{key[-8:]}"
    caplog.set_level(logging.DEBUG)
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [{}]
    scripted.fail_status = 503
    assert asyncio.run(backend.choice_probs([_chat("fire")], YES_NO)) == [None]
    shown = [repr(backend), str(vars(backend)), caplog.text]
    shown += [m for _, m in backend.drain_notices()]
    assert all(key not in text and key[-8:] not in text for text in shown)
    assert "***" in caplog.text  # what the server said is still shown, without the key


# ---- the real model behind the server --------------------------------------------------------


@pytest.mark.llm
def test_choice_probs_match_the_transformers_backend():
    tf = smollm2_transformers_backend()
    prompts = [
        "Is fire hot? Answer yes or no.",
        "Is ice hot? Answer yes or no.",
        "You are judging progress in the game NetHack. Message: 'You find a hidden passage.' "
        "Is this message a sign of progress? Answer yes or no.",
    ]
    chats = [_chat(p) for p in prompts]
    # one prompt per forward pass on both sides: the same bf16 numbers, no padding noise
    direct = [asyncio.run(tf.choice_probs([c], YES_NO))[0] for c in chats]
    with OpenAICompatServer(TransformersScorer(tf, model_name="smollm2")) as server:
        # top 64: every spelling of yes/no is in it, so nothing is lost to the top-k cut
        # (with the default top 5, "yes" at rank 25 on the NetHack prompt is missed: 0.064 vs
        # 0.067); a vLLM server needs --max-logprobs 64 for that
        server.max_logprobs = 64
        remote = _fast(server, top_logprobs=64, request_timeout=30)
        assert asyncio.run(remote.wait_ready(timeout=10)) == ["smollm2"]
        via_http = asyncio.run(remote.choice_probs(chats, YES_NO))
        via_cmpl = asyncio.run(
            _fast(server, top_logprobs=64, request_timeout=30, endpoint="completions")
            .choice_probs([tf.render(c) for c in chats], YES_NO)
        )  # fmt: skip
        # generating 6 tokens took 10-30 s on 2 busy cores: a wide per-attempt timeout
        patient = _fast(server, request_timeout=300)
        text = asyncio.run(patient.generate([chats[0]], max_tokens=6))
    for d, h, c in zip(direct, via_http, via_cmpl, strict=True):
        assert h is not None and c is not None
        assert h["yes"] == pytest.approx(d["yes"], abs=2e-3)
        assert c["yes"] == pytest.approx(d["yes"], abs=2e-3)
    assert isinstance(text[0], str) and text[0]
