"""The annotator's settings: which LLM, how to ask it, how hard to push it. A typed dataclass,
one of the sections of the run config (`annotator.*`), documented field by field; each number
declares its domain in its type (config_schema/domains.py)."""

from __future__ import annotations

from dataclasses import dataclass

from config_schema.domains import (
    Count,
    Fraction,
    Niceness,
    NonNegative,
    NonNegativeInt,
    OpenFraction,
    Positive,
    Share,
)


@dataclass
class AnnotatorConfig:
    backend: str = "auto"
    """"auto" (vLLM when it imports and starts, else transformers), "transformers", "vllm",
    or "openai" (any OpenAI-compatible server, e.g. `vllm serve`, at base_url)."""
    model: str = "smollm2-135m"
    """The embedded SmolLM2-135M-Instruct, a local model directory, or a .gguf file."""
    base_url: str | None = None
    """OpenAI-compatible server, e.g. http://llm-node:8000/v1 (backend "openai")."""
    endpoint: str = "chat"
    """Backend "openai": "chat" (/v1/chat/completions) or "completions" (/v1/completions, the
    chat rendered with the model's template from `chat_template_model`)."""
    chat_template_model: str | None = None
    """Backend "openai", endpoint "completions": a model spec (as `model`) whose tokenizer's chat
    template renders the prompts; None = the embedded SmolLM2's template."""
    api_key_env: str = "OPENAI_API_KEY"
    """Backend "openai": the environment variable holding the server's API key (sent as a Bearer
    token when set). The key itself never goes into a config file, a log or TensorBoard."""
    top_logprobs: Count = 5
    """Backend "openai": how many of the first answer token's most likely tokens to ask for."""
    min_choice_mass: Fraction = 0.05
    """The answer words (all spellings of yes/no, or of the ranking choices) must carry at least
    this share of the first answer token's probability; below it the answer is invalid, never a
    label (a judge whose likely answer is something else has not answered the question). The
    embedded SmolLM2 puts 0.12-0.34 of its first token on yes/no (10 NetHack captions), a capable
    instruct model over 0.9; a "Yes" fifth in the top 5 at 0.007 is no answer."""
    style: str = "direct"
    """"direct": one answer token scored from logprobs; "reasoned": ONI-like reasoning, then a tag."""
    goal: str = "default"
    """What counts as progress: default (score), combat, gold, stairs."""
    calibration: str = "quantile"
    """"quantile": helpful = P(yes) above a running quantile of recent captions' P(yes) (for
    biased judges such as SmolLM2); "none": the judge's own value is the label."""
    calibration_quantile: OpenFraction = 0.8
    """Calibration "quantile": a caption is helpful when its P(yes) is above this quantile of
    the recent captions' P(yes) (0.8: the top fifth)."""
    calibration_window: Count = 2000
    """Calibration "quantile": how many recent P(yes) values the quantile is taken over."""
    batch_size: Count = 32
    """Most prompts per LLM request. The annotator starts with small batches and grows them to
    what the backend answers in about `target_batch_s`, so first labels arrive in seconds."""
    target_batch_s: Positive = 5.0
    """Wall-clock seconds one batch should take, measured; sets the adaptive batch size (never
    below the first batch's 4 prompts: on a slow machine, larger batches cost less per prompt)."""
    busy_share: Share | None = None
    """The share of time the judge may keep its backend busy: a batch that kept it busy b seconds
    lets the next go b / busy_share after it began; 1 = never rest. For an LLM on this machine's
    CPUs, b is the CPU time it spent over its threads (a batch slowed by a busy machine does not
    rest for the wait); else the batch's wall-clock time. The first batch is not counted. An LLM
    computing on the training loop's CPUs costs the loop in proportion to its busy time,
    whatever its niceness (docs/performance.md), so resting trades labels/s for steps/s. None:
    chosen so that the transformers backend on CPU (the embedded LLM) takes at most 5 % of the
    CPU time it may use (0.1 for its one thread on 2 CPUs, 1 from 20 CPUs; a container's CPU
    quota counts, not the host's cores; the console says so);
    1 for a GPU, vLLM and a server (for vLLM on CPU, or a server on the training machine, set it
    yourself)."""
    max_in_flight: Count = 2
    """Requests (batches) in flight at once."""
    max_backlog: Count = 10_000
    """Pending captions kept; beyond it the oldest are dropped (counted) -- newest first, as ONI."""
    max_retries: NonNegativeInt = 2
    """Re-asks of a caption whose reasoned-style answer did not parse, sampled at temperature
    0.7 (a greedy re-ask would get the same text back). Direct-style answers are read from the
    first token's probabilities, which a re-ask would only repeat, so they are not re-asked."""
    request_timeout_s: Positive = 60.0
    """Backend "openai": seconds one HTTP attempt may take. In-process backends (transformers,
    vLLM) have no timeout: work they finish is never thrown away."""
    request_retries: NonNegativeInt = 4
    """Backend "openai": retries of a request after connection errors, timeouts, 408, 429, 5xx."""
    backoff_initial_s: NonNegative = 0.5
    """First wait before a retry; it doubles each time (with jitter) up to `max_backoff_s`. A
    server's `Retry-After` on 429/503 is honoured, capped by `max_backoff_s`."""
    max_backoff_s: NonNegative = 10.0
    """Longest wait between attempts while the LLM is down (back-off doubles up to this)."""
    pairs_per_round: Count = 32
    """Ranking: caption pairs drawn each time the pair backlog runs low."""
    caption_pool_size: Count = 10_000
    """Ranking: the newest distinct captions that pairs are drawn from."""
    label_store: str | None = None
    """SQLite label store; None = <run_dir>/labels.sqlite. Share one path to reuse labels."""
    niceness: Niceness = 10
    """Ray mode: the annotator process's nice value (0-19; 0 = the training loop's priority).
    Higher, it labels with the CPU the learner and workers leave idle first, and with a smaller
    share of what they want (Linux: nice 10 against 0 is about 1:9), so on a laptop an LLM judge
    costs training less and labels more slowly when the cores are busy."""
    num_gpus: NonNegative = 0.0
    """GPUs for the annotator actor (1 for an in-process vLLM on a GPU node)."""
    node_resource: str | None = None
    """A custom Ray resource the annotator asks 0.001 of, so that it runs on a node that
    declares it (the LLM node of cluster/launch/ declares `rogueray_llm`)."""
