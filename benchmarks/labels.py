"""Label throughput of the annotator's LLM backends, measured on one machine in one run.

    python benchmarks/labels.py [--backends transformers,vllm,openai] [--prompts 64] [--quick]
                                [--torch-threads 1] [--dtype bfloat16] [--out results.json]

Prints ONE JSON object on stdout (progress goes to stderr; whatever the engines print is sent to
stderr too). Every backend scores the same prompts: ``classification_prompt(caption)`` (direct
style, default goal) for ``--prompts`` NetHack messages, asked with the annotator's choices, in
requests of ``--request-size`` prompts (the annotator's batch size, 32) one after the other. Each
backend first answers a few warm-up prompts with other captions (the steady state of a running
annotator: model loaded, the shared system prompt seen before), then the measured prompts are
timed: ``labels_per_s`` = answered prompts / wall seconds.

Top-level keys
  machine            cpu count, torch threads, library versions
  prompts            the prompt template (kind, style, goal, version), count and token lengths
  labels_per_s       one entry per backend asked for:
    transformers       prefix_cache_on / prefix_cache_off (TransformersBackend(prefix_cache=...)),
                       speedup, and max_abs_diff_p_yes between the two
    vllm               the in-process engine; {"skipped": "vllm not installed"} without vLLM
    openai             OpenAIBackend against a server this benchmark starts: vLLM's
                       OpenAI-compatible server (python -m vllm.entrypoints.openai.api_server,
                       shared/design/llm-on-cpu.md section 2.4) when vLLM is importable, else the
                       project's test server tests/doubles/openai_server.py answering with the
                       real transformers backend (prefix cache on); "server" says which

Sections are computed in the order of ``SECTIONS``; each one is a function of the shared
``Context`` (arguments, captions, loaded backends) returning a JSON-able value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from label_captions import CAPTIONS, WARMUP_CAPTIONS  # noqa: E402

from annotator.prompts import classification_prompt  # noqa: E402

BACKENDS = ("transformers", "vllm", "openai")
SERVED_NAME = "smollm2"


def log(message: str) -> None:
    print(f"[labels {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    """What the sections share: the arguments, the prompts, and backends loaded once."""

    args: argparse.Namespace
    captions: list[str]
    _transformers: dict[bool, Any] = field(default_factory=dict)

    def chats(self, captions: list[str] | tuple[str, ...]) -> list[list[dict[str, str]]]:
        return [_chat(classification_prompt(c)) for c in captions]

    @property
    def choices(self) -> tuple[str, ...]:
        return classification_prompt("").choices

    def transformers(self, prefix_cache: bool = True) -> Any:
        """A TransformersBackend (loaded on first use, then shared)."""
        if prefix_cache not in self._transformers:
            from annotator.backends.local import TransformersBackend

            self._transformers[prefix_cache] = TransformersBackend(
                self.args.model,
                dtype=self.args.dtype,
                torch_threads=self.args.torch_threads,
                prefix_cache=prefix_cache,
            )
        return self._transformers[prefix_cache]

    def close(self) -> None:
        for backend in self._transformers.values():
            asyncio.run(backend.close())
        self._transformers.clear()


def _chat(prompt: Any) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in prompt.messages]


# ---------------------------------------------------------------------------------------------
# labels per second


def measure(ctx: Context, backend: Any, name: str) -> tuple[dict[str, Any], list]:
    """Warm up, then time the measured prompts in requests of --request-size, one at a time."""
    choices = ctx.choices
    asyncio.run(backend.choice_probs(ctx.chats(WARMUP_CAPTIONS), choices))
    chats = ctx.chats(ctx.captions)
    size = ctx.args.request_size
    answers: list = []
    log(f"{name}: {len(chats)} prompts ...")
    t0 = time.perf_counter()
    for s in range(0, len(chats), size):
        answers += asyncio.run(backend.choice_probs(chats[s : s + size], choices))
    seconds = time.perf_counter() - t0
    answered = sum(a is not None and bool(a) for a in answers)
    p_yes = [a["yes"] for a in answers if a]
    result = {
        "labels_per_s": round(answered / seconds, 3),
        "seconds": round(seconds, 3),
        "prompts": len(chats),
        "answered": answered,
        "mean_p_yes": round(sum(p_yes) / len(p_yes), 4) if p_yes else None,
    }
    log(f"{name}: {result['labels_per_s']} labels/s ({seconds:.1f} s)")
    return result, answers


def bench_transformers(ctx: Context) -> dict[str, Any]:
    on, on_answers = measure(ctx, ctx.transformers(prefix_cache=True), "transformers, prefix cache")
    off, off_answers = measure(ctx, ctx.transformers(prefix_cache=False), "transformers, no cache")
    pairs = [(a, b) for a, b in zip(on_answers, off_answers, strict=True) if a and b]
    return {
        "dtype": ctx.args.dtype,
        "torch_threads": ctx.args.torch_threads,
        "prefix_cache_on": on,
        "prefix_cache_off": off,
        "speedup": round(on["labels_per_s"] / off["labels_per_s"], 2)
        if off["labels_per_s"]
        else None,
        "max_abs_diff_p_yes": max(abs(a["yes"] - b["yes"]) for a, b in pairs) if pairs else None,
    }


def bench_vllm(ctx: Context) -> dict[str, Any]:
    if not _has_vllm():
        return {"skipped": "vllm not installed"}
    from annotator.backends import make_backend

    log("vllm: starting the in-process engine ...")
    t0 = time.perf_counter()
    backend = make_backend("vllm", model=ctx.args.model, dtype=ctx.args.dtype)
    try:
        start_s = time.perf_counter() - t0
        result, _ = measure(ctx, backend, "vllm")
    finally:
        asyncio.run(backend.close())
    return {"dtype": ctx.args.dtype, "engine_start_s": round(start_s, 1), **result}


def bench_openai(ctx: Context) -> dict[str, Any]:
    from annotator.backends import make_backend

    with contextlib.ExitStack() as stack:
        if _has_vllm():
            base_url, server = stack.enter_context(vllm_server(ctx))
        else:
            from tests.doubles.openai_server import OpenAICompatServer, TransformersScorer

            scorer = TransformersScorer(ctx.transformers(prefix_cache=True), SERVED_NAME)
            srv = stack.enter_context(OpenAICompatServer(scorer))
            base_url = srv.base_url
            server = {
                "kind": "tests/doubles/openai_server.py",
                "scorer": "TransformersScorer: the transformers backend, in this process, "
                f"{ctx.args.dtype}, prefix_cache=True, torch_threads={ctx.args.torch_threads}",
            }
        backend = make_backend("openai", base_url=base_url, model=SERVED_NAME)
        try:
            asyncio.run(backend.wait_ready(timeout=120))
            result, _ = measure(ctx, backend, "openai")
        finally:
            asyncio.run(backend.close())
    return {"server": server, "request_concurrency": backend.max_concurrency, **result}


@contextlib.contextmanager
def vllm_server(ctx: Context):
    """vLLM's OpenAI-compatible server as in shared/design/llm-on-cpu.md section 2.4."""
    from annotator.model_store import resolve_model

    port = _free_port()
    cores = os.cpu_count() or 1
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(resolve_model(ctx.args.model)), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--dtype", ctx.args.dtype, "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30),
    ]  # fmt: skip
    log_file = tempfile.NamedTemporaryFile("w+", prefix="vllm-server-", suffix=".log", delete=False)
    log(f"openai: starting the vLLM server on port {port} (log: {log_file.name}) ...")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    info = {
        "kind": "vllm.entrypoints.openai.api_server",
        "dtype": ctx.args.dtype,
        "VLLM_CPU_OMP_THREADS_BIND": env["VLLM_CPU_OMP_THREADS_BIND"],
    }
    try:
        yield f"http://127.0.0.1:{port}/v1", info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def section_labels_per_s(ctx: Context) -> dict[str, Any]:
    benches: dict[str, Callable[[Context], dict[str, Any]]] = {
        "transformers": bench_transformers,
        "vllm": bench_vllm,
        "openai": bench_openai,
    }
    out: dict[str, Any] = {}
    for name in ctx.args.backends:
        try:
            out[name] = benches[name](ctx)
        except Exception as e:  # noqa: BLE001 - one backend failing still reports the others
            log(f"{name}: failed: {type(e).__name__}: {e}")
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def section_unique_captions_labelled(ctx: Context) -> dict[str, Any]:
    """A fixed-length NetHack run with the hashing reward and the default annotator (Ray, real
    LLM): how many of the distinct captions the agents saw got a label by the end."""
    import sqlite3
    import tempfile

    from cluster.config import load_config
    from cluster.driver import train

    steps = 10_000 if ctx.args.quick else ctx.args.run_steps
    run_dir = Path(tempfile.mkdtemp(prefix="rogueray-labels-")) / "run"
    overrides = [
        f"run_dir={run_dir}", f"total_env_steps={steps}", "reward_model.name=hashing",
        "reward.intrinsic_coef=0.4", f"annotator.model={ctx.args.model}", "log_interval_s=30",
    ]  # fmt: skip
    log(f"unique captions: a {steps:,d}-step NetHack run in {run_dir}")
    start = time.monotonic()
    train(load_config(None, overrides), quiet=True)
    wall = time.monotonic() - start
    with sqlite3.connect(run_dir / "labels.sqlite") as db:
        seen = db.execute("SELECT COUNT(*), SUM(seen) FROM sightings").fetchone()
        labelled = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(s.seen), 0) FROM caption_labels l JOIN sightings s "
            "USING (model_id, prompt_version, caption)"
        ).fetchone()
    return {
        "env_steps": steps,
        "wall_s": round(wall, 1),
        "distinct_captions_seen": seen[0],
        "distinct_captions_labelled": labelled[0],
        "unique_caption_fraction_labelled": round(labelled[0] / max(seen[0], 1), 4),
        "sighting_fraction_labelled": round(labelled[1] / max(seen[1] or 0, 1), 4),
    }


SECTIONS: dict[str, Callable[[Context], Any]] = {
    "labels_per_s": section_labels_per_s,
    "unique_captions": section_unique_captions_labelled,
}


# ---------------------------------------------------------------------------------------------


def _has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine(ctx: Context) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": ctx.args.torch_threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vllm_installed": _has_vllm(),
    }


def prompts_info(ctx: Context) -> dict[str, Any]:
    first = classification_prompt(ctx.captions[0])
    info: dict[str, Any] = {
        "kind": first.kind,
        "style": first.style,
        "goal": first.goal,
        "version": first.version,
        "choices": list(first.choices),
        "count": len(ctx.captions),
        "distinct_captions": len(set(ctx.captions)),
        "request_size": ctx.args.request_size,
    }
    if "transformers" in ctx.args.backends or not _has_vllm():
        backend = ctx.transformers(prefix_cache=True)
        lengths = [
            len(backend.tokenizer(backend.render(c), add_special_tokens=False)["input_ids"])
            for c in ctx.chats(ctx.captions)
        ]
        info["tokens_min_mean_max"] = [
            min(lengths),
            round(sum(lengths) / len(lengths), 1),
            max(lengths),
        ]
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated, from: " + ", ".join(BACKENDS))  # fmt: skip
    parser.add_argument("--prompts", type=int, default=None,
                        help="measured prompts (default 64; 16 with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16 prompts")
    parser.add_argument("--request-size", type=int, default=32,
                        help="prompts per choice_probs call (the annotator's batch size)")  # fmt: skip
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--run-steps", type=int, default=30_000,
                        help="env steps of the NetHack run for the unique-caption fraction")  # fmt: skip
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown or not names:
        parser.error(f"--backends: unknown {unknown}; allowed: {', '.join(BACKENDS)}")
    args.backends = list(dict.fromkeys(names))
    if args.prompts is None:
        args.prompts = 16 if args.quick else 64
    if args.prompts < 1 or args.request_size < 1 or args.torch_threads < 1:
        parser.error("--prompts, --request-size and --torch-threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Only the JSON goes to the real stdout: fd 1 points at stderr meanwhile, for this process
    # and for the engines and servers it starts.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.prompts)]
    ctx = Context(args=args, captions=captions)
    try:
        result: dict[str, Any] = {"machine": machine(ctx), "prompts": prompts_info(ctx)}
        for name, section in SECTIONS.items():
            log(f"section {name}")
            result[name] = section(ctx)
    finally:
        ctx.close()
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
