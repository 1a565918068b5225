"""From the run config to the annotator: every annotator.* key reaches its backend, the API key
comes from the environment only, a backend that cannot work stops the run before Ray, and a run
that ends without labels says why."""

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from annotator.metrics import (
    BACKEND_STATE,
    BACKEND_UP,
    INVALID_RATE,
    LABELS_TOTAL,
    PENDING,
    STARTING,
)
from cluster.annotation import backend_options, labels_verdict, preflight
from cluster.cli import main as cli_main
from cluster.config import ConfigError, dump_yaml, load_config

SECRET = "sk-test-not-a-real-key"


def _config(tmp_path, *overrides):
    return load_config(
        None,
        [
            f"run_dir={tmp_path}/run",
            "reward_model.name=hashing",
            "reward.intrinsic_coef=0.4",
            *overrides,
        ],
    )


def test_openai_keys_reach_the_backend_and_the_key_comes_from_the_environment(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    config = _config(
        tmp_path,
        "annotator.backend=openai",
        "annotator.base_url=http://127.0.0.1:9/v1",
        "annotator.endpoint=completions",
        "annotator.api_key_env=MY_LLM_KEY",
        "annotator.request_retries=7",
        "annotator.backoff_initial_s=0.25",
        "annotator.max_backoff_s=3",
        "annotator.request_timeout_s=12",
        "annotator.top_logprobs=9",
    )
    options = backend_options(config)
    assert options["api_key"] == SECRET
    assert options["endpoint"] == "completions"
    assert options["chat_template_model"] == "smollm2-135m"  # renders the chat for /completions
    assert (options["max_retries"], options["backoff_initial"], options["backoff_max"]) == (
        7,
        0.25,
        3.0,
    )
    assert (options["request_timeout"], options["top_logprobs"]) == (12.0, 9)
    assert "model" not in options  # the server says which model it serves
    assert SECRET not in dump_yaml(config)  # never in config.yaml (nor TensorBoard's copy)


def test_in_process_backends_get_only_what_they_take(tmp_path):
    options = backend_options(_config(tmp_path, "annotator.backend=transformers"))
    assert options["model"] == "smollm2-135m"
    assert not {"api_key", "base_url", "endpoint"} & set(options)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_without_vllm_stops_before_ray_with_the_install_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"vLLM is not installed: pip install vllm==0\.32\.0"):
        preflight(_config(tmp_path, "annotator.backend=vllm"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_a_refused_start_leaves_no_empty_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "new"
    assert cli_main(["train", f"run_dir={run_dir}", "annotator.backend=vllm"]) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
    assert not run_dir.exists() and not run_dir.parent.exists()  # runs/ was made for it too
    run_dir.mkdir(parents=True)  # one the user made: it stays
    assert cli_main(["train", f"run_dir={run_dir}", "annotator.backend=vllm"]) == 2
    assert run_dir.is_dir()


class _Server:
    """A real HTTP server on 127.0.0.1 answering GET /v1/models with `status`."""

    def __init__(self, status: int):
        body = json.dumps({"object": "list", "data": [{"id": "judge-7b"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if status == 200 else b'{"error": "no"}')

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_server_that_refuses_the_key_stops_the_run_naming_the_variable(
    tmp_path, monkeypatch, status
):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = _Server(status)
    try:
        config = _config(tmp_path, "annotator.backend=openai", f"annotator.base_url={server.url}")
        with pytest.raises(
            ConfigError, match=f"HTTP {status}.*OPENAI_API_KEY is set but refused"
        ) as e:
            preflight(config)
        assert SECRET not in str(e.value)
    finally:
        server.close()


def test_a_server_not_answering_yet_is_one_line_and_training_starts(tmp_path):
    server = _Server(200)
    url = server.url
    server.close()  # nothing listens there now
    lines = preflight(_config(tmp_path, "annotator.backend=openai", f"annotator.base_url={url}"))
    assert len(lines) == 1 and "nothing answers at" in lines[0] and "training starts" in lines[0]


@pytest.mark.parametrize("status", [404, 500])
def test_a_server_answering_another_status_is_one_line_asking_about_base_url(tmp_path, status):
    server = _Server(status)
    try:
        config = _config(tmp_path, "annotator.backend=openai", f"annotator.base_url={server.url}")
        assert preflight(config) == [
            f"annotator: GET {server.url}/models answered HTTP {status}; is base_url right?"
        ]
    finally:
        server.close()


def test_a_serving_server_is_named_with_its_model(tmp_path):
    server = _Server(200)
    try:
        config = _config(tmp_path, "annotator.backend=openai", f"annotator.base_url={server.url}")
        assert preflight(config) == [f"annotator: {server.url} serves judge-7b"]
    finally:
        server.close()


def test_no_labels_or_unreadable_answers_end_the_run_with_why_and_what_to_do(tmp_path):
    config = _config(tmp_path)
    never_up = {LABELS_TOTAL: 0.0, BACKEND_UP: 0.0, INVALID_RATE: 0.0, PENDING: 40.0}
    message = labels_verdict(config, never_up)
    assert "never answered" in message and "start it (`rogueray doctor` checks it)" in message
    assert "faster LLM" not in message
    slow = {**never_up, BACKEND_UP: 1.0}
    message = labels_verdict(config, slow)
    assert "too slow" in message and f"rogueray resume {config.run_dir}" in message
    assert "faster LLM" in message
    unreadable = {LABELS_TOTAL: 12.0, BACKEND_UP: 1.0, INVALID_RATE: 0.8, PENDING: 0.0}
    assert "80% of the annotator's answers could not be read" in labels_verdict(config, unreadable)
    healthy = {LABELS_TOTAL: 300.0, BACKEND_UP: 1.0, INVALID_RATE: 0.02, PENDING: 3.0}
    assert labels_verdict(config, healthy) is None
    assert "never reported" in labels_verdict(config, None)
    loading = {**never_up, BACKEND_STATE: STARTING}
    assert "still loading when the run ended" in labels_verdict(config, loading)
    # A server that has not answered yet is not loading anything we know of.
    server = _config(
        tmp_path, "annotator.backend=openai", "annotator.base_url=http://127.0.0.1:9/v1"
    )
    message = labels_verdict(server, loading)
    assert "http://127.0.0.1:9/v1 never answered" in message and "loading" not in message
    assert (
        labels_verdict(_config(tmp_path, "reward_model.name=none", "reward.intrinsic_coef=0"), None)
        is None
    )


@pytest.mark.nle
@pytest.mark.slow
def test_resume_keeps_the_calibration_window(tmp_path):
    """Quantile calibration labels against the recent P(yes) values; a resume that forgot them
    would label its first captions against an empty window. Real NetHack, serial mode, the
    rules judge (no LLM needed); the window is read back from the real checkpoints."""
    from cluster.checkpoint import load_latest
    from cluster.driver import train

    def run(total):
        overrides = [
            f"run_dir={tmp_path}/run", "mode=serial", f"total_env_steps={total}", "seed=3",
            "env.num_envs_per_worker=4", "rollout.num_workers=1", "rollout.unroll_length=16",
            "learner.batch_size=64", "model.hidden_size=32", "reward_model.name=hashing",
            "reward.intrinsic_coef=0.4", "annotator.backend=rules",
            "annotator.calibration=quantile",
        ]  # fmt: skip
        train(load_config(None, overrides), quiet=True)
        return load_latest(tmp_path / "run")["annotator"]["calibration"]["recent"]

    first = run(1_024)
    assert first, "the first run labelled nothing; the window has nothing to keep"
    second = run(2_048)
    assert second[: len(first)] == first  # continued, not restarted from an empty window


@pytest.mark.nle
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_a_resume_refused_before_ray_leaves_the_runs_config_as_it_was(tmp_path, capsys):
    """A newcomer's `rogueray resume RUN annotator.backend=vllm` (no vLLM here) exited 2 but had
    already rewritten RUN/config.yaml, so every later plain resume failed the same way."""
    from cluster.cli import main

    run = tmp_path / "run"
    args = [
        f"run_dir={run}", "mode=serial", "total_env_steps=256", "env.num_envs_per_worker=2",
        "rollout.num_workers=1", "rollout.unroll_length=16", "learner.batch_size=32",
        "model.hidden_size=32", "annotator.backend=rules", "--quiet",
    ]  # fmt: skip
    assert main(["train", *args]) == 0
    saved = (run / "config.yaml").read_text()
    code = main(["resume", str(run), "annotator.backend=vllm", "total_env_steps=512", "--quiet"])
    assert code == 2 and "vLLM is not installed" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved


def test_resume_continues_the_intrinsic_return_on_the_status_line(tmp_path):
    """r_int on the status line is the mean of the learner's last per-update intrinsic returns;
    a resume that forgot them showed `r_int n/a`, then only the new updates', while the console
    said the episode window continues. Real NetHack, serial mode, the rules judge."""
    from cluster.checkpoint import load_latest
    from cluster.driver import train

    def run(total):
        overrides = [
            f"run_dir={tmp_path}/run", "mode=serial", f"total_env_steps={total}", "seed=3",
            "env.num_envs_per_worker=4", "rollout.num_workers=1", "rollout.unroll_length=16",
            "learner.batch_size=64", "model.hidden_size=32", "reward_model.name=hashing",
            "reward.intrinsic_coef=0.4", "annotator.backend=rules", "env.max_episode_steps=50",
        ]  # fmt: skip
        train(load_config(None, overrides), quiet=True)
        return load_latest(tmp_path / "run")["counters"]["recent_intrinsic_returns"]

    first = run(1_024)  # one mean per update that finished an episode: 16 updates here
    assert 0 < len(first) <= 16
    second = run(2_048)
    assert second[: len(first)] == first and len(second) > len(first)
