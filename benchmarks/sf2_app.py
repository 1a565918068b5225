"""Sample Factory 2 APPO on NLE's NetHackScore-v0, run by sf2_side_by_side.py inside its own
virtual environment (Sample Factory 2.1.1 needs gymnasium<1.0 and numpy<2: NLE 1.0 there).

    <venv>/bin/python benchmarks/sf2_app.py --experiment=X --train_dir=DIR [SF2 flags...]

The env is NLE's NetHackScore-v0 with the observations rogueray keeps (glyphs, blstats,
message); the encoder is rogueray's own NetHackEncoder (learner/models.py, imported from this
checkout: it needs only torch), so both systems run the same network before the GRU core.
Sample Factory prints "Total num frames: N" every few seconds; the caller reads those lines.

Priority: Sample Factory renices its rollout workers by +10 and its inference worker by +2. On a
machine shared with other users' work that starves them, while rogueray's Ray workers run at the
driver's priority (cluster/placement.py), so here every Sample Factory process keeps the
priority it starts with; SF2_OWN_NICENESS=1 restores Sample Factory's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # learner.models of this checkout

ENV_NAME = "nethack_score"


def _keep_priority() -> None:
    """psutil.Process.nice(value) becomes a no-op (reading it still works); spawned children
    import this module again, so it holds in every Sample Factory process."""
    import psutil

    own = psutil.Process.nice

    def nice(self, value=None):
        return own(self) if value is None else None

    psutil.Process.nice = nice


if os.environ.get("SF2_OWN_NICENESS") != "1":
    _keep_priority()
OBSERVATION_KEYS = ("glyphs", "blstats", "message")  # as actors/nle_tasks.py


def make_env(full_env_name, cfg=None, env_config=None, render_mode=None):
    import nle  # noqa: F401 - registers NetHack*-v0

    return gym.make("NetHackScore-v0", observation_keys=OBSERVATION_KEYS)


def make_encoder(cfg, obs_space):
    from sample_factory.model.encoder import Encoder

    from learner.models import NetHackEncoder

    class RoguerayEncoder(Encoder):
        """rogueray's NetHackEncoder (glyph crop, blstats and message MLPs) -> [N, rnn_size]."""

        def __init__(self):
            super().__init__(cfg)
            self.net = NetHackEncoder(cfg.rnn_size)

        def forward(self, obs_dict):
            return self.net(obs_dict)

        def get_out_size(self) -> int:
            return self.net.out_size

    return RoguerayEncoder()


def main() -> int:
    from sample_factory.algo.utils.context import global_model_factory
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.train import run_rl

    register_env(ENV_NAME, make_env)
    global_model_factory().register_encoder_factory(make_encoder)
    parser, _ = parse_sf_args(sys.argv[1:])
    cfg = parse_full_cfg(parser, sys.argv[1:])
    return run_rl(cfg)


if __name__ == "__main__":
    sys.exit(main())
