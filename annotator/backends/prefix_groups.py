"""Grouping tokenized prompts by shared prefix, for the transformers backend's prefix KV cache:
which prompts share enough leading tokens that computing those once pays. Pure Python."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token id sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(
    ids: list[list[int]], keep: list[int], min_prefix: int
) -> tuple[list[tuple[list[int], tuple[int, ...]]], list[int]]:
    """(rows, shared prefix) groups worth a cached prefix, and the rows to run whole.

    Rows are sorted lexicographically by token ids, so rows sharing a prefix are adjacent and
    a range's common prefix is the minimum of its neighbours' common prefixes. Ranges are cut
    where neighbours share fewer than `min_prefix`, then split further at their weakest
    links while that saves work: a group of n rows with prefix p costs about
    p + sum(len) - n * p token evaluations. Every prefix leaves at least one token of each row.
    """
    order = sorted(keep, key=lambda i: ids[i])
    if not order:
        return [], []
    adj = [common_prefix_length(ids[a], ids[b]) for a, b in zip(order, order[1:], strict=False)]

    def prefix_len(a: int, b: int) -> int:  # rows order[a:b]
        shortest = min(len(ids[i]) for i in order[a:b]) - 1
        return min([shortest, *adj[a : b - 1]])

    def pieces(a: int, b: int, cut: int) -> list[tuple[int, int]]:
        out, start = [], a
        for j in range(a, b - 1):
            if adj[j] <= cut:
                out.append((start, j + 1))
                start = j + 1
        out.append((start, b))
        return out

    groups: list[tuple[list[int], tuple[int, ...]]] = []
    whole: list[int] = []
    todo = pieces(0, len(order), min_prefix - 1)
    while todo:
        a, b = todo.pop()
        p = prefix_len(a, b)
        if p < min_prefix:
            whole.extend(order[a:b])
            continue
        if b - a > 1 and min(adj[a : b - 1]) == p:
            parts = pieces(a, b, p)
            gain = sum((y - x - 1) * prefix_len(x, y) for x, y in parts) - (b - a - 1) * p
            if gain > 0:
                todo.extend(parts)
                continue
        groups.append((order[a:b], tuple(ids[order[a]][:p])))
    return groups, whole
