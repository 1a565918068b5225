"""The openai backend against a real HTTP server on 127.0.0.1 (tests/doubles/openai_server.py):
readiness, answers and numbers equal to the transformers backend's, the served model, the API
key. Faults and retries: test_backends_openai_faults.py; answer shapes of real servers and the
minimum choice mass: test_backends_openai_shapes.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from annotator.backends import BackendUnavailable
from annotator.backends.openai_wire import (
    pick_listed_model,
)
from tests.annotator.openai_helpers import YES_NO, fast_backend, user_chat
from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers, TransformersScorer
from tests.doubles.shared_models import smollm2_transformers_backend

# ---- readiness ----------------------------------------------------------------------------


def test_wait_ready_discovers_the_model(scripted):
    backend = fast_backend(scripted)
    names = asyncio.run(backend.wait_ready(timeout=5))
    assert names == ["scripted"]
    assert backend.model == "scripted"
    assert backend.model_id == f"scripted@{scripted.base_url}"


def test_wait_ready_times_out_with_a_clear_error_and_succeeds_once_the_server_is_up():
    server = OpenAICompatServer(ScriptedAnswers(model_name="late"))
    server.start()
    server.stop()  # reserve a port, then go down
    backend = fast_backend(server)

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
    backend = fast_backend(scripted, model="other")
    with pytest.raises(BackendUnavailable, match="'other'"):
        asyncio.run(backend.wait_ready(timeout=2))
    # through a request: no answer, and the user is told once what to change
    assert asyncio.run(backend.choice_probs([user_chat("a"), user_chat("b")], YES_NO)) == [
        None,
        None,
    ]
    asyncio.run(backend.choice_probs([user_chat("c")], YES_NO))
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["model_not_served"]
    assert "annotator.model" in notices[0][1] and "'other'" in notices[0][1]
    assert scripted.requests == []


def test_llama_server_listing_its_gguf_path_serves_the_configured_model(scripted):
    # llama-server lists the .gguf it loaded as the model id and answers whatever name it gets
    path = "/models/SmolLM2-135M-Instruct-Q4_1.gguf"
    scripted.listed_models, scripted.any_model = [path], True
    for configured in ("smollm2", "SmolLM2-135M-Instruct-Q4_1"):
        backend = fast_backend(scripted, model=configured)
        (r,) = asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
        assert r["yes"] == pytest.approx(0.7 / 0.9)
        assert scripted.requests[-1]["model"] == path  # the name the server listed
        assert backend.model_id == f"{path}@{scripted.base_url}"
        assert backend.drain_notices() == []


def test_models_route_refusing_the_key_is_told_not_polled_for(scripted):
    scripted.models_status = 401
    backend = fast_backend(scripted, api_key="sk-wrong", request_timeout=30)
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [None]
    assert scripted.models_requests == 1  # refused at once, not polled until the 30 s timeout
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["http_401"] and "api_key_env" in notices[0][1]


def test_server_without_a_models_route_is_asked_for_the_configured_model(scripted):
    scripted.models_status = 404
    backend = fast_backend(scripted, model="scripted")
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))[0]
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
    backend = fast_backend(scripted, endpoint=endpoint)
    chats = [user_chat("Is fire hot?"), user_chat("Is ice hot?")] if endpoint == "chat" else [
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
    plain = fast_backend(scripted)
    forced = fast_backend(scripted, structured_choice=True)
    assert asyncio.run(plain.choice_probs([user_chat("weird question")], YES_NO)) == [
        {}
    ]  # answered, but no choice among the top tokens: invalid
    assert plain.stats.invalid == 1
    (weird,) = asyncio.run(forced.choice_probs([user_chat("weird question")], YES_NO))
    assert scripted.requests[-1]["structured_outputs"] == {"choice": YES_NO}
    assert weird == {"yes": 1.0, "no": 0.0}  # the forced answer
    (both,) = asyncio.run(forced.choice_probs([user_chat("both")], YES_NO))
    assert both == pytest.approx({"yes": 0.5, "no": 0.5})  # "n" counts for "no"
    assert forced.stats.invalid == 0


def test_empty_batch_sends_nothing(scripted):
    backend = fast_backend(scripted)
    assert asyncio.run(backend.choice_probs([], YES_NO)) == []
    assert asyncio.run(backend.generate([], max_tokens=2)) == []
    assert scripted.requests == []


def test_generate_chat_and_completions(scripted):
    chat = asyncio.run(fast_backend(scripted).generate([user_chat("fire?")], max_tokens=4))
    cmpl = asyncio.run(
        fast_backend(scripted, endpoint="completions").generate(["ice?"], max_tokens=4)
    )
    assert chat == ["Yes"] and cmpl == ["No"]


def test_completions_endpoint_needs_a_template_for_chats(scripted):
    backend = fast_backend(scripted, endpoint="completions")
    with pytest.raises(ValueError, match="chat_template_model"):
        asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))


def test_many_requests_in_flight_at_once(scripted):
    scripted.delay_s = 0.2
    backend = fast_backend(scripted, max_concurrency=16)
    results = asyncio.run(backend.choice_probs([user_chat(f"fire {i}") for i in range(32)], YES_NO))
    assert all(r is not None for r in results)
    # Counted by the server, not timed: requests overlap, and never more than max_concurrency.
    assert 1 < scripted.max_in_flight <= 16


# ---- the served model ------------------------------------------------------------------------


def test_model_id_follows_the_model_the_answers_name(scripted):
    backend = fast_backend(scripted)
    asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
    assert backend.model_id == f"scripted@{scripted.base_url}"
    assert backend.model_changes == 0 and backend.drain_notices() == []

    scripted.answer_model = "scripted-v2"  # the server now serves other weights
    asyncio.run(backend.choice_probs([user_chat("fire"), user_chat("ice")], YES_NO))
    assert backend.model_id == f"scripted-v2@{scripted.base_url}"
    assert backend.model_changes == 1
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == ["model_changed"]
    assert "'scripted-v2'" in notices[0][1] and "'scripted'" in notices[0][1]
    assert scripted.requests[-1]["model"] == "scripted"  # still asks by the listed name

    asyncio.run(backend.generate([user_chat("fire")], max_tokens=2))
    assert backend.model_changes == 1  # same model again: no change


def test_explicit_model_id_is_kept_but_changes_are_still_told(scripted):
    backend = fast_backend(scripted, model_id="my-judge")
    scripted.answer_model = "other"
    asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
    assert backend.model_id == "my-judge"
    assert backend.model == "other" and backend.model_changes == 1


# ---- the API key -----------------------------------------------------------------------------


def test_api_key_is_sent_but_never_shown(scripted, caplog):
    key = "sk-secret-abcdefgh12345678"
    backend = fast_backend(scripted, api_key=key)
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))[0]
    assert scripted.authorization == f"Bearer {key}"

    scripted.fail_status = 401  # and the server echoes the key, as some do
    scripted.fail_message = f"Incorrect API key provided: {key}. Also ...{key[-8:]}"
    caplog.set_level(logging.DEBUG)
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [{}]
    scripted.fail_status = 503
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [None]
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
    chats = [user_chat(p) for p in prompts]
    # one prompt per forward pass on both sides: the same bf16 numbers, no padding noise
    direct = [asyncio.run(tf.choice_probs([c], YES_NO))[0] for c in chats]
    with OpenAICompatServer(TransformersScorer(tf, model_name="smollm2")) as server:
        # top 64: every spelling of yes/no is in it, so nothing is lost to the top-k cut
        # (with the default top 5, "yes" at rank 25 on the NetHack prompt is missed: 0.064 vs
        # 0.067); a vLLM server needs --max-logprobs 64 for that
        server.max_logprobs = 64
        remote = fast_backend(server, top_logprobs=64, request_timeout=30)
        assert asyncio.run(remote.wait_ready(timeout=10)) == ["smollm2"]
        via_http = asyncio.run(remote.choice_probs(chats, YES_NO))
        via_cmpl = asyncio.run(
            fast_backend(server, top_logprobs=64, request_timeout=30, endpoint="completions")
            .choice_probs([tf.render(c) for c in chats], YES_NO)
        )  # fmt: skip
        # generating 6 tokens took 10-30 s on 2 busy cores: a wide per-attempt timeout
        patient = fast_backend(server, request_timeout=300)
        text = asyncio.run(patient.generate([chats[0]], max_tokens=6))
    for d, h, c in zip(direct, via_http, via_cmpl, strict=True):
        assert h is not None and c is not None
        assert h["yes"] == pytest.approx(d["yes"], abs=2e-3)
        assert c["yes"] == pytest.approx(d["yes"], abs=2e-3)
    assert isinstance(text[0], str) and text[0]
