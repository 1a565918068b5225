"""Record what real OpenAI-compatible servers answer, byte for byte, as fixtures for the parser.

    python tests/annotator/recorded/record.py llamacpp     # in an env with llama-cpp-python[server]
    .ci-vllm/bin/python tests/annotator/recorded/record.py vllm

Starts the server as tests/servers.py does (127.0.0.1, SmolLM2-135M-Instruct), sends the
requests in CASES (the annotator's own prompts: classification, default goal) and writes each
answer's body unchanged to ``<server>_<case>.json`` beside this file, plus ``<server>_index.json``:
for every case the request (path and body), the HTTP status, the server version and command.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotator.prompts import classification_prompt  # noqa: E402
from tests.servers import SERVED_NAME, SERVER_FACTORIES, missing  # noqa: E402

CAPTION = "You kill the newt!"
# The annotator asks reasoned answers for up to 512 tokens; 128 keep the recording quick on a busy
# 2-core machine and give the same shape (finish_reason "length" when cut).
REASONED_TOKENS = 128


def _messages(style: str) -> list[dict[str, str]]:
    prompt = classification_prompt(CAPTION, style=style)
    return [{"role": role, "content": content} for role, content in prompt.messages]


def _rendered(style: str) -> str:
    """The chat as the completions endpoint gets it: rendered with the model's chat template,
    as OpenAIBackend does with chat_template_model="smollm2-135m"."""
    from transformers import AutoTokenizer

    from annotator.model_store import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"), local_files_only=True)
    return tok.apply_chat_template(_messages(style), tokenize=False, add_generation_prompt=True)


def cases() -> dict[str, tuple[str, dict]]:
    """case name -> (path, body): what the openai backend sends, with and without logprobs."""
    base = {"model": SERVED_NAME, "temperature": 0.0}
    direct_chat = {**base, "messages": _messages("direct"), "max_tokens": 1}
    direct_text = {**base, "prompt": _rendered("direct"), "max_tokens": 1}
    return {
        "models": ("GET /v1/models", {}),
        "chat": ("/v1/chat/completions", {**direct_chat, "logprobs": True, "top_logprobs": 5}),
        "chat_no_logprobs": ("/v1/chat/completions", direct_chat),
        "chat_reasoned": (
            "/v1/chat/completions",
            {**base, "messages": _messages("reasoned"), "max_tokens": REASONED_TOKENS},
        ),
        "chat_top_logprobs_25": (
            "/v1/chat/completions",
            {**direct_chat, "logprobs": True, "top_logprobs": 25},
        ),
        "completions": ("/v1/completions", {**direct_text, "logprobs": 5}),
        "completions_no_logprobs": ("/v1/completions", direct_text),
        "completions_reasoned": (
            "/v1/completions",
            {**base, "prompt": _rendered("reasoned"), "max_tokens": REASONED_TOKENS},
        ),
        "completions_two_prompts": (
            "/v1/completions",
            {**direct_text, "prompt": [direct_text["prompt"]] * 2, "logprobs": 5},
        ),
    }


def record(kind: str) -> None:
    import httpx

    reason = missing(kind)
    if reason:
        raise SystemExit(reason)
    todo = cases()
    server = SERVER_FACTORIES[kind]()
    index: dict = {
        "server": server.version,
        "command": " ".join(server.command).replace(str(Path.home()), "~"),
        "python": sys.version.split()[0],
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": {},
    }
    with server, httpx.Client(timeout=300, trust_env=False) as client:
        for name, (path, body) in todo.items():
            try:
                if path.startswith("GET "):
                    r = client.get(f"http://127.0.0.1:{server.port}{path[4:]}")
                else:
                    r = client.post(f"http://127.0.0.1:{server.port}{path}", json=body)
            except httpx.HTTPError as e:
                index["cases"][name] = {"request": path, "error": f"{type(e).__name__}: {e}"}
                print(f"{kind} {name}: {type(e).__name__}: {e}")
                continue
            out = HERE / f"{kind}_{name}.json"
            out.write_bytes(r.content)
            shown = {k: (v if k not in ("messages", "prompt") else "...") for k, v in body.items()}
            index["cases"][name] = {
                "request": path if path.startswith("GET ") else f"POST {path}",
                "body": shown,
                "status": r.status_code,
                "content_type": r.headers.get("content-type"),
                "file": out.name,
            }
            print(f"{kind} {name}: HTTP {r.status_code}, {len(r.content)} bytes -> {out.name}")
    index["prompts"] = {
        "messages": f"annotator.prompts.classification_prompt({CAPTION!r}, style=direct|reasoned)",
        "prompt": "the same messages rendered with the SmolLM2 tokenizer's chat template",
    }
    (HERE / f"{kind}_index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    kinds = sys.argv[1:] or ["llamacpp"]
    for k in kinds:
        record(k)
