"""The char-CNN's batch padding: the convolutions see a bounded set of batch shapes (oneDNN keeps a
kernel per shape, so an unbounded set grew the learner's heap), and the padding rows change
neither the outputs nor the gradients of the real rows."""

from __future__ import annotations

import numpy as np
import torch

from actors.messages import CaptionLabel
from reward_models import ClassificationRewardModel, encode_captions
from reward_models.char_cnn import CharCNN
from reward_models.learned import INFERENCE_CHUNK

TINY = dict(embed_dim=4, channels=4, out_dim=8)


def conv_batch_sizes(module: torch.nn.Module) -> set[int]:
    """The batch sizes every forward pass of `module`'s conv stacks is called with, from now on."""
    seen: set[int] = set()
    for cnn in (m for m in module.modules() if isinstance(m, CharCNN)):
        cnn.convs.register_forward_pre_hook(lambda _, args: seen.add(args[0].shape[0]))
    return seen


def unpadded(net: CharCNN, tokens: torch.Tensor) -> torch.Tensor:
    """The char-CNN's layers applied to exactly these rows: the reference."""
    return net.fc(net.convs(net.embedding(tokens).transpose(1, 2)).flatten(1))


def test_the_convolutions_see_one_shape_per_64_rows():
    torch.manual_seed(0)
    net = CharCNN(**TINY)
    seen = conv_batch_sizes(net)
    tokens = torch.from_numpy(
        encode_captions([f"You see here {i} gold pieces." for i in range(300)])
    )
    with torch.no_grad():
        for rows in range(1, 301):
            assert net(tokens[:rows]).shape == (rows, TINY["out_dim"])
    assert seen == {64, 128, 192, 256, 320}


def test_padding_changes_no_output_and_no_gradient():
    torch.manual_seed(0)
    net = CharCNN(**TINY)
    tokens = torch.from_numpy(encode_captions([f"The {i} door opens." for i in range(70)]))
    weights = torch.randn(70, TINY["out_dim"])

    def gradients(out: torch.Tensor) -> list[torch.Tensor]:
        net.zero_grad()
        (out * weights).sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    out, reference = net(tokens), unpadded(net, tokens)  # 70 rows: padded to 128
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    for got, expected in zip(gradients(out), gradients(reference), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_the_learners_reward_calls_keep_the_shapes_bounded():
    """The learner scores the distinct captions of each batch, a different number every time."""
    model = ClassificationRewardModel(
        embed_dim=4, channels=4, text_dim=8, mlp_sizes=(8,), steps_per_label_batch=1
    )
    model.add_labels([CaptionLabel(f"caption {i}", float(i % 2)) for i in range(100)])
    seen = conv_batch_sizes(model.net)
    captions = [f"You kill the newt number {i}!" for i in range(1500)]
    for count in np.random.default_rng(0).integers(1, len(captions), size=100):
        model.rewards(captions[:count])
    assert INFERENCE_CHUNK == 1024 and len(seen) > 10
    assert seen <= set(range(64, 1025, 64))  # 16 shapes at most, however many batches
