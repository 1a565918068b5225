"""Policy networks: an actor-critic with an optional GRU core over an encoder per observation
kind. The NetHack encoder works on NLE's integer arrays directly (glyph crop around the hero,
bottom-line stats, message bytes), so rollout workers never render images."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learner.precision import autocast, autocast_dtype

MAX_GLYPH = 5976  # nle.nethack.MAX_GLYPH; fixed here so the learner needs no NLE import
BLSTATS_X, BLSTATS_Y = 0, 1


class VectorEncoder(nn.Module):
    """Flat float observations (`vector` [..., D]) through a two-layer tanh MLP."""

    def __init__(self, obs_dim: int, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, hidden_size),
            nn.Tanh(),
        )
        self.out_size = hidden_size

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(obs["vector"].float())


class NetHackEncoder(nn.Module):
    """glyphs [N, 21, 79] int16, blstats [N, 27] int64, message [N, 256] uint8 -> [N, hidden]."""

    def __init__(self, hidden_size: int, crop_size: int = 9, glyph_dim: int = 32):
        super().__init__()
        self.crop_size = crop_size
        self.glyph_embedding = nn.Embedding(MAX_GLYPH + 1, glyph_dim)  # MAX_GLYPH pads the border
        self.crop_net = nn.Sequential(
            nn.Conv2d(glyph_dim, 64, 3, padding=1),
            nn.ELU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(64 * crop_size * crop_size, 256),
            nn.ELU(),
        )
        self.stats_net = nn.Sequential(nn.Linear(27, 128), nn.ELU(), nn.Linear(128, 128), nn.ELU())
        self.message_net = nn.Sequential(
            nn.Linear(256, 128), nn.ELU(), nn.Linear(128, 128), nn.ELU()
        )
        self.out = nn.Sequential(nn.Linear(256 + 128 + 128, hidden_size), nn.ELU())
        self.out_size = hidden_size

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        blstats = obs["blstats"].long()
        # Cropped in NLE's int16, then widened: widening the whole map first made the crop 12x
        # slower (63 against 5 ms for 4,096 maps; F.pad and the gather move 4x the bytes).
        crop = self._crop(obs["glyphs"], blstats[:, BLSTATS_X], blstats[:, BLSTATS_Y]).long()
        crop = self.glyph_embedding(crop).permute(0, 3, 1, 2)  # [N, C, k, k]
        stats = blstats.float()
        stats = torch.sign(stats) * torch.log1p(
            stats.abs()
        )  # scale-free: HP 15 and gold 3000 alike
        message = obs["message"].float() / 255.0
        parts = [self.crop_net(crop), self.stats_net(stats), self.message_net(message)]
        return self.out(torch.cat(parts, dim=-1))

    def _crop(self, glyphs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[N, H, W] glyph ids -> [N, k, k] window centred on (x, y), padded outside the map."""
        r = self.crop_size // 2
        x = x.clamp(0, glyphs.shape[2] - 1)  # stats can lie outside the map on odd screens
        y = y.clamp(0, glyphs.shape[1] - 1)
        padded = F.pad(glyphs, (r, r, r, r), value=MAX_GLYPH)
        offsets = torch.arange(self.crop_size, device=glyphs.device)
        rows = (y[:, None] + offsets[None, :])[:, :, None]  # padded row of map row y-r+i is y+i
        cols = (x[:, None] + offsets[None, :])[:, None, :]
        batch = torch.arange(glyphs.shape[0], device=glyphs.device)[:, None, None]
        return padded[batch, rows, cols]


class ActorCritic(nn.Module):
    """Encoder -> optional GRU core -> policy logits and value.

    forward(obs [T, B, ...], state [B, H], starts [T, B] bool) -> (logits [T, B, A],
    values [T, B], final state [B, H]), all float32; `starts[t]` zeroes the state before step t
    (a new episode began there). Feed-forward cores use H = 0.

    `precision` (learner/precision.py) picks float32 or bfloat16 autocast for the encoder's
    convolutions and matrix products, per device at call time; the GRU core, its state and the
    heads stay float32.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_actions: int,
        hidden_size: int,
        recurrent: bool,
        precision: str = "float32",
    ):
        super().__init__()
        autocast_dtype(precision, "cpu")  # rejects an unknown precision now
        self.precision = precision
        self.encoder = encoder
        self.core = nn.GRUCell(encoder.out_size, hidden_size) if recurrent else None
        self.state_size = hidden_size if recurrent else 0
        core_out = hidden_size if recurrent else encoder.out_size
        self.policy_head = nn.Linear(core_out, num_actions)
        self.value_head = nn.Linear(core_out, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.orthogonal_(module.weight, gain=2**0.5)
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)  # near-uniform first policy
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.state_size)

    def autocast(self, device_type: str = "cpu") -> torch.autocast:
        """The context `forward` computes in; a caller making many small calls (a rollout
        worker's unroll) enters it once around them all, so weights are cast once."""
        return autocast(self.precision, device_type)

    def act(
        self, obs: dict[str, torch.Tensor], state: torch.Tensor, starts: torch.Tensor, noise
    ) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of a rollout worker (call under torch.no_grad): `forward` on obs [1, B, ...],
        then each env's action drawn from softmax(logits) with `gumbel_max` and `noise`, standard
        Gumbel [B, A] float32 numpy. Returns (actions, B ints; logits [1, B, A]; values [1, B];
        the next state [B, H])."""
        logits, values, state = self(obs, state, starts)
        return gumbel_max(logits.numpy()[0], noise).tolist(), logits, values, state

    def forward(
        self, obs: dict[str, torch.Tensor], state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, batch = starts.shape
        flat = {k: v.reshape(steps * batch, *v.shape[2:]) for k, v in obs.items()}
        device_type = state.device.type
        with autocast(self.precision, device_type):
            features = self.encoder(flat).float()
        with torch.autocast(device_type, enabled=False):  # float32 even inside a caller's context
            return self._core_and_heads(features, state, starts)

    def _core_and_heads(
        self, features: torch.Tensor, state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, batch = starts.shape
        if self.core is None:
            core_out = features
        else:
            features = features.view(steps, batch, -1)
            keep = (~starts).float().unsqueeze(-1)
            outputs = []
            for t in range(steps):
                state = self.core(features[t], state * keep[t])
                outputs.append(state)
            core_out = torch.stack(outputs).reshape(steps * batch, -1)
        logits = self.policy_head(core_out).view(steps, batch, -1)
        values = self.value_head(core_out).view(steps, batch)
        return logits, values, state


def gumbel_max(logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Actions [...] drawn from softmax(logits) for logits [..., A], given standard Gumbel noise
    [..., A]: argmax(logits + noise) is distributed as softmax(logits) (the Gumbel-max trick;
    Gumbel 1954, as used by Maddison et al. 2014, "A* Sampling"). An action with logit -inf is
    never drawn."""
    return np.argmax(logits + noise, axis=-1)


def build_policy(
    kind: str,
    obs_spec: dict,
    num_actions: int,
    hidden_size: int,
    recurrent: bool,
    crop_size: int = 9,
    precision: str = "float32",
) -> ActorCritic:
    """Build the network for an environment's observation spec ({key: (shape, dtype)}).

    `precision` "auto" gives the NetHack encoder bfloat16 where the hardware computes it natively
    (learner/precision.py); the MLP encoder stays float32, as it costs too little to gain.
    Raises ValueError naming a kind that does not suit the observations, or a bad precision.
    """
    if kind == "auto":
        kind = "nethack" if "glyphs" in obs_spec else "mlp"
    if kind == "nethack":
        missing = {"glyphs", "blstats", "message"} - set(obs_spec)
        if missing:
            raise ValueError(
                f"model.kind 'nethack' needs NetHack observations; missing {sorted(missing)}"
            )
        encoder = NetHackEncoder(hidden_size, crop_size)
    elif kind == "mlp":
        if "vector" not in obs_spec:
            raise ValueError(
                f"model.kind 'mlp' needs a 'vector' observation; this env gives {sorted(obs_spec)}"
            )
        encoder = VectorEncoder(int(obs_spec["vector"][0][0]), hidden_size)
    else:
        raise ValueError(f"model.kind must be auto, nethack or mlp; got {kind!r}")
    if kind == "mlp" and precision == "auto":
        precision = "float32"
    return ActorCritic(encoder, num_actions, hidden_size, recurrent, precision)


class UniformPolicy(nn.Module):
    """Uniformly random actions with the ActorCritic interface: the "trivial policy" of the
    throughput benchmarks, and a random-agent baseline.

    `forward` returns zero logits [T, B, A] and zero values [T, B], the same tensors for every
    call of the same [T, B]: one zero expanded (writing into them raises), so that a trivial
    policy costs the sampler it is measured in next to nothing."""

    state_size = 0
    precision = "float32"

    def __init__(self, num_actions: int):
        super().__init__()
        self.num_actions = num_actions
        self._zeros: dict[torch.Size, tuple[torch.Tensor, torch.Tensor]] = {}

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 0)

    def autocast(self, device_type: str = "cpu") -> contextlib.nullcontext:
        return contextlib.nullcontext()

    def forward(self, obs, state: torch.Tensor, starts: torch.Tensor):
        shape = starts.shape
        if shape not in self._zeros:
            zero = torch.zeros(())
            self._zeros[shape] = zero.expand(*shape, self.num_actions), zero.expand(shape)
        logits, values = self._zeros[shape]
        return logits, values, state

    def act(self, obs, state: torch.Tensor, starts: torch.Tensor, noise: np.ndarray):
        """`ActorCritic.act` for equal logits: the action is the argmax of the noise alone, the
        draw `gumbel_max` makes from zero logits (adding zeros changes no comparison), in one
        call."""
        logits, values, state = self.forward(obs, state, starts)
        return noise.argmax(-1).tolist(), logits, values, state
