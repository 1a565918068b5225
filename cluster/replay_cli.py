"""`rogueray replay RUN_DIR|CHECKPOINT`: record a checkpoint's policy playing: NLE ttyrecs, an
animated GIF (and MP4) of the screen with caption, LLM label and intrinsic reward per step, and
a transcript (logic in cluster/replay.py)."""

from __future__ import annotations

import argparse

from cluster.progress import NO_PROGRESS_HELP


def add_parser(sub) -> None:
    replay = sub.add_parser(
        "replay",
        help="record episodes of a checkpoint's policy: ttyrec, GIF/MP4 with captions, transcript",
    )
    replay.add_argument("target", help="a run directory (its newest checkpoint) or a .pt file")
    replay.add_argument("--episodes", type=int, default=1, help="episodes to record (1)")
    replay.add_argument("--out", help="output folder (default RUN_DIR/replay/<checkpoint name>)")
    replay.add_argument("--env", help="another env id with the same observations and actions")
    replay.add_argument(
        "--max-episode-steps", type=int, help="cap episodes (default: the run's env setting)"
    )
    replay.add_argument(
        "--mode", choices=("sampled", "greedy"), default="sampled", help="sampled (default)"
    )
    replay.add_argument(
        "--seed", type=int, default=1_000_000_007, help="episode i is seeded seed+i (evaluate's)"
    )
    replay.add_argument("--fps", type=float, default=8.0, help="frames per second (8)")
    replay.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def run(args: argparse.Namespace) -> int:
    from cluster.replay import format_report, replay

    out, records = replay(
        args.target,
        episodes=args.episodes,
        out_dir=args.out,
        env_id=args.env,
        seed=args.seed,
        mode=args.mode,
        max_episode_steps=args.max_episode_steps,
        fps=args.fps,
        progress=not args.no_progress,
    )
    print(format_report(out, records))
    return 0
