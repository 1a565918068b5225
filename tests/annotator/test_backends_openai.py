"""The openai backend against a real HTTP server on 127.0.0.1 (tests/doubles/openai_server.py):
readiness, numbers equal to the transformers backend's, outages, slowness, garbage."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from annotator.backends import BackendUnavailable, make_backend
from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers, TransformersScorer
from tests.doubles.shared_models import smollm2_transformers_backend

YES_NO = ["yes", "no"]


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
    assert backend.model == "scripted" and backend.model_id == "scripted"


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
    t0 = time.monotonic()
    results = asyncio.run(backend.choice_probs([_chat(f"fire {i}") for i in range(32)], YES_NO))
    elapsed = time.monotonic() - t0
    assert all(r is not None for r in results)
    assert elapsed < 2.0  # 32 x 0.2 s = 6.4 s one at a time; 16 at once: ~0.4 s


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
    scripted.stop()
    backend = _fast(scripted, max_retries=8, backoff_initial=0.1, backoff_max=0.3)
    backend._served_model = "scripted"  # known model: no discovery round-trip needed
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
    backend = _fast(server, model="scripted-model")
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
        text = asyncio.run(remote.generate([chats[0]], max_tokens=6))
    for d, h, c in zip(direct, via_http, via_cmpl, strict=True):
        assert h is not None and c is not None
        assert h["yes"] == pytest.approx(d["yes"], abs=2e-3)
        assert c["yes"] == pytest.approx(d["yes"], abs=2e-3)
    assert isinstance(text[0], str) and text[0]
