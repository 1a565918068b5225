"""`rogueray doctor`: one OK/FAIL line per check, exit 0 when all pass and 1 when one fails.
Tiny configs: CartPole without an annotator, NetHack with the rules backend (the LLM probe runs
without a language model), two that must fail (CUDA asked for where there is none, an LLM
server nobody runs), a local Ray counting more CPUs than the machine has cores, and an
OpenAI-compatible server (tests/doubles/openai_server.py) that serves or refuses the key."""

from pathlib import Path

import loky
import pytest
import torch

from cluster.cli import main
from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers

CARTPOLE = str(Path(__file__).resolve().parents[2] / "configs" / "cartpole.yaml")
CHECKS = ("versions", "env CartPole-v1", "NLE (NetHackScore-v0)", "ray", "gpu", "llm backend",
          "model cache", "tensorboard", "run_dir")  # fmt: skip


def _lines(out: str) -> dict[str, str]:
    """{check name: 'OK ...' / 'FAIL ...'} of doctor's output."""
    found = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("OK", "FAIL"):
            name, _, text = rest.strip().partition(": ")
            found[name] = f"{status} {text}"
    return found


def test_cartpole_without_annotator_all_ok(tmp_path, capsys):
    assert main(["doctor", CARTPOLE, f"run_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    assert tuple(lines) == CHECKS
    assert all(text.startswith("OK ") for text in lines.values()), out
    assert "torch " in lines["versions"] and "nle 1.3.0" in lines["versions"]
    assert "stepped 10 times" in lines["env CartPole-v1"]
    assert "stepped 10 times" in lines["NLE (NetHackScore-v0)"]
    assert "not used" in lines["llm backend"] and "one question" not in out
    assert "wrote an event file" in lines["tensorboard"]
    assert out.rstrip().endswith("all checks passed")
    assert not (tmp_path / "run").exists()  # doctor creates nothing


@pytest.mark.nle
def test_rules_backend_answers_the_probe(tmp_path, capsys):
    args = ["doctor", "annotator.backend=rules", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = _lines(out)
    assert "one question" not in out  # the rules judge answers at once: nothing to announce
    assert lines["env NetHackScoreExtendedActions-v1"].startswith("OK made and stepped 10")
    assert "NLE (NetHackScore-v0)" not in lines  # the run's env is NLE already
    llm = lines["llm backend"]
    assert llm.startswith("OK rules") and "answered a classification prompt in" in llm
    assert "yes " in llm and "no " in llm  # the choices' probabilities


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_fails(tmp_path, capsys):
    assert main(["doctor", CARTPOLE, f"run_dir={tmp_path}", "learner.device=cuda"]) == 1
    out = capsys.readouterr().out
    lines = _lines(out)
    assert lines["gpu"].startswith("FAIL") and "learner.device=cuda" in lines["gpu"]
    assert "set them to cpu" in lines["gpu"]
    assert lines["tensorboard"].startswith("OK")  # the other checks still ran
    assert "1 check failed" in out


def test_llm_server_nobody_runs_fails_at_once(tmp_path, capsys):
    args = [
        "doctor",
        "annotator.backend=openai",
        "annotator.base_url=http://127.0.0.1:9/v1",  # the discard port: nothing listens
        f"run_dir={tmp_path}",
        "--probe-timeout",
        "120",
    ]
    assert main(args) == 1
    llm = _lines(capsys.readouterr().out)["llm backend"]
    # Not the probe's "gave no answer within 120 s": a refused connection needs no wait.
    assert llm.startswith("FAIL nothing answers at http://127.0.0.1:9/v1/models"), llm
    assert "start the server there" in llm and "annotator.base_url" in llm


def test_a_local_ray_wanting_more_cpus_than_cores_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loky, "cpu_count", lambda: 3)  # a 3-CPU container, whatever the host
    main(["doctor", CARTPOLE, f"run_dir={tmp_path}", "rollout.num_workers=4"])
    ray_line = _lines(capsys.readouterr().out)["ray"]
    assert ray_line.startswith("OK") and "more than this machine's 3 cores" in ray_line


def test_bad_config_is_exit_2(capsys):
    assert main(["doctor", CARTPOLE, "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def _doctor_llm_line(tmp_path, capsys, server) -> tuple[int, str]:
    args = ["doctor", "annotator.backend=openai", f"annotator.base_url={server.base_url}",
            f"run_dir={tmp_path}", "--probe-timeout", "60"]  # fmt: skip
    code = main(args)
    out = capsys.readouterr().out
    # what the probe is about to do is said before it, as a local model takes tens of seconds
    before = f"[rogueray] doctor: asking {server.base_url} one question"
    assert out.index(before) < out.index("llm backend:"), out
    return code, _lines(out)["llm backend"]


def test_a_serving_llm_server_answers_the_probe(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAICompatServer(ScriptedAnswers(model_name="judge-7b")) as server:
        code, llm = _doctor_llm_line(tmp_path, capsys, server)
        asked = server.models_requests
    assert llm.startswith(f"OK openai ({server.base_url}) answered"), llm
    assert code == 0
    # doctor asks the model list once; the backend asks again when it starts
    assert asked == 2, asked


@pytest.mark.parametrize("status", [401, 403])
def test_an_llm_server_refusing_the_key_fails_naming_the_variable(tmp_path, capsys, status):
    with OpenAICompatServer(ScriptedAnswers()) as server:
        server.models_status = status
        code, llm = _doctor_llm_line(tmp_path, capsys, server)
        asked = server.models_requests
    assert code == 1 and llm.startswith(f"FAIL the server at {server.base_url}/models"), llm
    assert f"HTTP {status}" in llm and "OPENAI_API_KEY" in llm
    assert asked == 1  # no probe after a refused key


def test_model_cache_line_says_converted_only_for_a_complete_folder(tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import save_file

    from annotator import model_store
    from cluster.config import load_config
    from cluster.doctor import check_model_cache

    monkeypatch.setenv(model_store.CACHE_ENV, str(tmp_path))
    target = tmp_path / model_store.DEFAULT_MODEL_DIRNAME
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"half of a conversion")  # no tokenizer, manifest
    config = load_config(CARTPOLE, [])
    assert "not converted yet" in check_model_cache(config)
    for name in ("config.json", "tokenizer.json", model_store.MANIFEST):
        (target / name).write_text("{}")
    save_file({"w": np.zeros(2, np.float32)}, target / "model.safetensors")  # readable weights
    assert check_model_cache(config).startswith(f"the embedded model is converted in {target}")
