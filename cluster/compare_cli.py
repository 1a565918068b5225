"""`rogueray compare RUN_DIR...`: return, success rate and intrinsic return against env steps,
runs grouped by config with seed means and 95 % bands (PNG and SVG), a markdown table of final
figures, and each run's scalars as CSV/JSON (logic in cluster/compare.py)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    compare = sub.add_parser(
        "compare", help="plot runs grouped by config (seed mean, 95%% band); table of finals"
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--out", default="comparison", help="output folder (default ./comparison)")
    compare.add_argument(
        "--group-by",
        metavar="KEY[,KEY...]",
        help="group runs by these config keys only, e.g. reward_model.name,annotator.backend "
        "(default: every key but the seed and bookkeeping such as log_interval_s)",
    )


def run(args: argparse.Namespace) -> int:
    from cluster.compare import compare, describe_groups

    group_by = [key.strip() for key in args.group_by.split(",")] if args.group_by else None
    result = compare(args.run_dirs, args.out, group_by)
    print(f"[rogueray] {len(result['groups'])} group(s):")
    print(describe_groups(result["groups"]))
    print()
    print(result["table"], end="")
    print()
    print(
        f"[rogueray] wrote {result['png']}, {result['svg']}, {result['table_path']} and "
        f"{len(result['exported'])} scalar files under {args.out}/scalars"
    )
    return 0
