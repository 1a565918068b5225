"""`rogueray judge [key=value ...]`: how good is this judge? Asks the configured annotator backend
(`annotator.*` keys, the same as for training) about the team-labelled caption set in
benchmarks/judge_set/ and reports AUC of P(helpful) against the team's labels per goal and
overall, accuracy and positive rate at the configured calibration, agreement on the caption
pairs, the invalid-answer rate and labels/s, as a table and as JSON. The metrics are in
annotator/judge_bench.py, the set's reading in annotator/judge_set.py; the labelling guide is
docs/judge-labelling.md."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path

from annotator.calibration import CALIBRATIONS
from cluster.cli_args import output_file, positive_int
from cluster.progress import NO_PROGRESS_HELP, Progress

"""A server wait longer than this says so on its first failed probe (a shorter one ends with its
own error line soon enough)."""


def add_parser(sub) -> None:
    judge = sub.add_parser(
        "judge",
        help="measure a judge (annotator config) on the team-labelled caption set",
        description=__doc__,
    )
    judge.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="annotator settings, e.g. annotator.backend=rules annotator.style=reasoned "
        "(the 'annotator.' prefix may be left out); annotator.goal=G asks only that goal, as "
        "--goals G",
    )
    judge.add_argument(
        "--set",
        dest="set_dir",
        help="folder with captions.csv and pairs.csv "
        "(default: benchmarks/judge_set of this source tree)",
    )
    judge.add_argument("--goals", help="comma-separated goals to ask about (default: all labelled)")
    judge.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="N captions drawn at random (seed 0: the same for every judge)",
    )
    judge.add_argument(
        "--pairs",
        choices=("scores", "ranking", "none"),
        default="scores",
        help="pair agreement from the two captions' scores (default, no extra questions), from "
        "the ranking prompt (asked), or not at all",
    )
    judge.add_argument(
        "--json", type=output_file, metavar="FILE", help="also write the report as JSON to FILE"
    )
    judge.add_argument(
        "--answers",
        type=output_file,
        metavar="FILE",
        help="also write every answer as CSV (caption, goal, team label, judge score) to FILE",
    )
    judge.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    judge.add_argument(
        "--embedding",
        metavar="NAME",
        help="measure the ELLM-style similarity reward (reward_model.name=ellm) instead of an "
        "LLM: P(helpful) = cosine similarity of the caption and the goal's sentence in this "
        "sentence embedding (all-minilm-l6-v2); accuracy and positive rate at --threshold",
    )
    judge.add_argument(
        "--threshold",
        type=float,
        help="with --embedding: the similarity threshold T in [-1, 1) (default: ellm's, 0.4)",
    )


def _overrides(items: list[str]) -> list[str]:
    """The key=value arguments as annotator overrides ('annotator.' added where left out); a key
    of another config section (learner.learning_rate, run_dir) is refused: the judge trains
    nothing, so it would have no effect."""
    from annotator.config import AnnotatorConfig
    from cluster.config import RunConfig

    annotator_keys = {f.name for f in dataclasses.fields(AnnotatorConfig)}
    training_keys = {f.name for f in dataclasses.fields(RunConfig)} - {"annotator"}
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r} is not key=value")
        key = key.lstrip("-").replace("-", "_")
        head, dot, _ = key.partition(".")
        if head in training_keys and (dot or head not in annotator_keys):
            raise ValueError(
                f"judge takes annotator.* settings only; {key!r} is a training setting "
                "(it has no effect on the judge)"
            )
        out.append(f"{key if key.startswith('annotator.') else 'annotator.' + key}={value}")
    return out


def _asked_goals(args: argparse.Namespace, overrides: list[str], ann) -> list[str] | None:
    """--goals, or annotator.goal=G given on the command line (one goal, as --goals G); None:
    every goal the set labels."""
    goals = args.goals.split(",") if args.goals else None
    if not any(item.startswith("annotator.goal=") for item in overrides):
        return goals
    if goals is not None and goals != [ann.goal]:
        raise ValueError(
            f"annotator.goal={ann.goal} and --goals {args.goals} disagree; give the goals once, "
            "with --goals (comma-separated)"
        )
    return [ann.goal]


def _describe(ann) -> str:
    if ann.backend == "rules":  # no model: the rules file
        from annotator.backends.rules import DEFAULT_RULES, rules_path

        path = rules_path(ann.model)
        where = "shipped rules annotator/rules_default.yaml" if path == DEFAULT_RULES else path
    else:
        where = ann.base_url if ann.backend == "openai" else ann.model
    return f"{ann.backend} ({where}), style {ann.style}"


async def _measure(config, data, pairs: str, show_progress: bool):
    from annotator.backends import make_backend
    from annotator.judge_bench import run_benchmark, total_questions
    from cluster.annotation import backend_options, server_wait_notice

    ann = config.annotator
    backend = await asyncio.to_thread(make_backend, ann.backend, **backend_options(config))
    try:
        ready = getattr(backend, "wait_ready", None)
        if ready is not None:
            await ready(timeout=ann.request_timeout_s, on_wait=server_wait_notice(ann, "judge"))
        total = total_questions(data, pairs)
        with Progress(total, desc="judge", unit="question", enabled=show_progress) as bar:
            answers = await run_benchmark(
                backend,
                data,
                style=ann.style,
                batch_size=ann.batch_size,
                max_retries=ann.max_retries,
                pairs=pairs,
                progress=bar.update,
            )
        return answers, getattr(backend, "model_id", ann.model)
    finally:
        await backend.close()


def run(args: argparse.Namespace) -> int:
    from annotator.judge_bench import format_table, summarise
    from annotator.judge_set import SET_DIR, load_judge_set
    from cluster.annotation import check_backend_installed
    from cluster.config import load_config

    overrides = _overrides(args.overrides)
    config = load_config(None, overrides)
    ann = config.annotator
    goals = _asked_goals(args, overrides, ann)
    # the team's set must be complete; a folder of one's own (e.g. heldout/) may be small
    data = load_judge_set(args.set_dir or SET_DIR, min_captions=300 if args.set_dir is None else 1)
    data = data.subset(goals, args.limit)
    if args.embedding:
        return _similarity(args, data, ann)
    check_backend_installed(config)  # vLLM missing: one line now, not a traceback from loading
    answers, model_id = asyncio.run(_measure(config, data, args.pairs, not args.no_progress))
    kw = {"quantile": ann.calibration_quantile, "window": ann.calibration_window}
    report = summarise(data, answers, calibration=ann.calibration, **kw)
    report["judge"] = {
        "backend": ann.backend,
        "model": ann.model,
        "model_id": model_id,
        "base_url": ann.base_url,
        "style": ann.style,
        "pairs": args.pairs,
    }
    others = {}
    for mode in CALIBRATIONS:
        if mode != ann.calibration:
            other = summarise(data, answers, calibration=mode, **kw)
            others[mode] = {"per_goal": other["per_goal"], "overall": other["overall"]}
    report["other_calibrations"] = others
    notes = []
    for mode, other in others.items():
        o = other["overall"]
        notes.append(
            f"  with calibration {mode}: accuracy {o['accuracy']:.3f}, positive rate "
            f"{o['positive_rate']:.3f}"
        )
    print(format_table(report, f"judge: {_describe(ann)}; model id {model_id}", notes))
    _save(args, data, answers, report)
    return 0


def _save(args, data, answers, report: dict) -> None:
    """--answers FILE.csv and --json FILE, when asked for."""
    if args.answers:
        _write_answers(Path(args.answers), data, answers)
        print(f"answers written to {args.answers}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.json}")


def _write_answers(path: Path, data, answers) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["caption", "goal", "team", "judge"])
        for goal in data.goals:
            for caption, team, score in zip(
                data.captions, data.labels[goal], answers.scores[goal], strict=True
            ):
                writer.writerow([caption, goal, team, "" if score is None else f"{score:.6g}"])


def _similarity(args: argparse.Namespace, data, ann) -> int:
    """--embedding: the ELLM-style reward as a judge (annotator/judge_similarity.py)."""
    from annotator.judge_bench import format_table, summarise
    from annotator.judge_similarity import at_threshold, similarity_answers
    from reward_models.ellm import DEFAULT_THRESHOLD
    from reward_models.embedding import EmbeddingUnavailable

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not -1.0 <= threshold < 1.0:
        raise ValueError(f"--threshold must be in [-1, 1) (a cosine similarity); got {threshold}")
    if args.pairs == "ranking":
        raise ValueError("--pairs ranking asks an LLM; with --embedding use scores or none")
    total = len(data.captions) * len(data.goals)
    show = not args.no_progress
    with Progress(total, desc="judge", unit="question", enabled=show) as bar:
        try:
            answers = similarity_answers(data, embedding=args.embedding, progress=bar.update)
        except EmbeddingUnavailable as exc:
            raise ValueError(str(exc)) from None
    if args.pairs == "none":
        answers.preferences = []
    kw = {"quantile": ann.calibration_quantile, "window": ann.calibration_window}
    report = summarise(data, at_threshold(answers, threshold), calibration="none", **kw)
    report["judge"] = {"embedding": args.embedding, "threshold": threshold, "pairs": args.pairs}
    title = (
        f"judge: ELLM-style similarity, embedding {args.embedding}; accuracy and positive rate "
        f"at similarity > {threshold} (the reward's threshold)"
    )
    print(format_table(report, title).replace("calibration none", f"threshold {threshold}"))
    _save(args, data, answers, report)
    return 0
