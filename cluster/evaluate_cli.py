"""`rogueray evaluate RUN_DIR|CHECKPOINT`: the policy played greedily and sampled over N episodes,
in this process on the CPU, with 95 % confidence intervals (logic in cluster/evaluate.py)."""

from __future__ import annotations

import argparse

from cluster.progress import NO_PROGRESS_HELP


def add_parser(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="play a checkpoint's policy greedily and sampled; metrics with 95%% CIs"
    )
    evaluate.add_argument("target", help="a run directory (its newest checkpoint) or a .pt file")
    evaluate.add_argument("--episodes", type=int, default=20, help="episodes per mode (20)")
    evaluate.add_argument("--env", help="another env id with the same observations and actions")
    evaluate.add_argument(
        "--max-episode-steps", type=int, help="cap episodes (default: the run's env setting)"
    )
    evaluate.add_argument("--envs", type=int, default=8, help="envs stepped together (8)")
    evaluate.add_argument(
        "--seed", type=int, default=1_000_000_007, help="episode i is seeded seed+i in both modes"
    )
    evaluate.add_argument(
        "--mode", choices=("both", "greedy", "sampled"), default="both", help="both (default)"
    )
    evaluate.add_argument(
        "--out", help="output folder (default RUN_DIR/evaluation/<checkpoint name>)"
    )
    evaluate.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def run(args: argparse.Namespace) -> int:
    from cluster.evaluate import MODES, evaluate, format_summary

    report, paths = evaluate(
        args.target,
        episodes=args.episodes,
        env_id=args.env,
        seed=args.seed,
        num_envs=args.envs,
        max_episode_steps=args.max_episode_steps,
        modes=MODES if args.mode == "both" else (args.mode,),
        out_dir=args.out,
        progress=not args.no_progress,
    )
    print(format_summary(report))
    print(f"[rogueray] wrote {paths['json']}, {paths['csv']} and {paths['episodes']}")
    return 0
