"""Observations handed from a rollout worker to a consumer on the same machine (the learner)
through shared memory rather than Ray's object store: the shared buffers of Sample Factory
(Petrenko et al. 2020, "Sample Factory", section 3.2), with Ray still carrying the rest.

A worker owns one anonymous shared-memory file (Linux `memfd_create`) of `num_slots` slots, each
the observation buffers of one sample, {key: [T + 1, B, ...]}, and one state byte per slot, FREE
or BUSY. The worker writes a sample's observations straight into a FREE slot and marks it BUSY;
its fragment's `obs` is then a `SlotObservations` mapping, which pickles to a few numbers (the
worker's pid, the file's descriptor, the slot and the layout). Unpickled in another process of
the same machine, it maps the file through /proc/<pid>/fd/<fd> at first access (once per worker
process: the mapping is kept while in use, and outlives the worker's process) and gives numpy
views of the slot. The consumer calls `release` once it is done with the arrays (the learner:
after its update), which marks the slot FREE.

Why: a 16 x 32 NetHack fragment's observations are 2 MB; through the object store they cost
3.2 ms of machine CPU per fragment against 1.1 ms for the fragment without them (Ray's plasma
store: create, copy, seal, free, in the worker, the raylet and the reader), 4 us per env step
(docs/performance.md). A worker with no FREE slot (its fragments wait unreleased) writes into
ordinary arrays, which travel through the object store as before; so does a worker on another
machine than its consumer, which never makes slots.
"""

from __future__ import annotations

import mmap
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

FREE, BUSY = 0, 1
_ALIGN = 64  # bytes: each array starts on a cache line
_TOKEN = 32  # bytes at the start of the file: its token, checked by a consumer that maps it
_NAME = "rogueray-observations"  # the memfd's name: /proc/<pid>/fd/<fd> links to /memfd:<name>
_IDLE_S = 300.0  # a consumer lets go of a worker's file unused this long (a retired worker's)


@dataclass(frozen=True)
class SlotAddress:
    """Where a slot's observations live: what a `SlotObservations` pickles to (under 1 kB)."""

    token: str  # names the worker's file: a new worker process makes a new one
    pid: int
    fd: int
    size: int  # bytes of the whole file
    slot: int  # index of its state byte, after the token
    offset: int  # bytes from the start of the file to the slot's first array
    layout: tuple[tuple[str, int, tuple[int, ...], str], ...]  # (key, offset, shape, dtype)


class ObservationSlots:
    """A worker's shared-memory file of `num_slots` observation slots for samples of `rows`
    (T + 1) x `cols` (B) observations of `spec` {key: (shape, dtype)}.

    Raises OSError where the machine has no `memfd_create` (not Linux) or no memory for it.
    """

    def __init__(self, spec: dict, rows: int, cols: int, num_slots: int):
        if not hasattr(os, "memfd_create"):
            raise OSError("this platform has no memfd_create (Linux only)")
        arrays, offset = [], 0
        for key, (shape, dtype) in spec.items():
            full = (rows, cols, *shape)
            arrays.append((key, offset, full, np.dtype(dtype).str))
            offset += _aligned(int(np.prod(full)) * np.dtype(dtype).itemsize)
        self._slot_bytes, self._header = offset, _aligned(_TOKEN + num_slots)
        self._layout = tuple(arrays)
        size = self._header + num_slots * self._slot_bytes
        self._fd = os.memfd_create(_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
        except OSError:
            os.close(self._fd)
            raise
        self._size, self._token = size, uuid.uuid4().hex
        self._map[:_TOKEN] = self._token.encode()
        self._states = np.frombuffer(self._map, np.uint8, num_slots, offset=_TOKEN)

    @property
    def busy(self) -> int:
        """Slots written and not yet released."""
        return int(np.count_nonzero(self._states == BUSY))

    def acquire(self) -> SlotObservations | None:
        """A FREE slot's buffers, now BUSY, or None when every slot is BUSY."""
        free = np.flatnonzero(self._states == FREE)
        if not free.size:
            return None
        slot = int(free[0])
        self._states[slot] = BUSY
        offset = self._header + slot * self._slot_bytes
        address = SlotAddress(
            self._token, os.getpid(), self._fd, self._size, slot, offset, self._layout
        )
        return SlotObservations(address, self._map)


class SlotObservations(Mapping):
    """A fragment's observations {key: [T + 1, B, ...]} in a worker's slot (see the module).

    In the worker it holds the worker's own mapping; unpickled elsewhere, it maps the worker's
    file at first access (raising `ObservationsLost` when it cannot: the worker process is gone)
    and keeps that mapping, so that the arrays and `release` outlive the worker's process. The
    arrays are valid until `release`: after it the worker may write the next sample there.
    """

    def __init__(self, address: SlotAddress, buffer: mmap.mmap | None = None):
        self.address = address
        self._buffer = buffer
        self._arrays = None if buffer is None else _views(buffer, address)

    def __reduce__(self):
        return SlotObservations, (self.address,)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return (key for key, *_ in self.address.layout)

    def __len__(self) -> int:
        return len(self.address.layout)

    def available(self) -> bool:
        """True when the arrays can be read here (maps the worker's file if need be)."""
        try:
            self._resolved()
        except ObservationsLost:
            return False
        return True

    @property
    def busy(self) -> bool:
        """True from the worker's write until `release`."""
        return self._state()[0] == BUSY

    def release(self) -> None:
        """Hand the slot back to the worker. Reading the arrays after this reads whatever the
        worker writes there next."""
        self._state()[0] = FREE

    def _state(self) -> np.ndarray:
        self._resolved()
        return np.frombuffer(self._buffer, np.uint8, 1, offset=_TOKEN + self.address.slot)

    def _resolved(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._buffer = _attach(self.address)
            self._arrays = _views(self._buffer, self.address)
        return self._arrays


class ObservationsLost(RuntimeError):
    """A slot's observations cannot be read: the worker process that wrote them is gone."""


def release_observations(obs: Mapping) -> None:
    """Release `obs` if it lives in a worker's slot whose file is still there (after the
    worker's death no one writes it again); ordinary arrays need nothing."""
    if isinstance(obs, SlotObservations) and obs.available():
        obs.release()


def observations_available(obs: Mapping) -> bool:
    return not isinstance(obs, SlotObservations) or obs.available()


# token -> (mapping, last use): a consumer's mappings of workers' files. One unused for _IDLE_S
# is let go (a retired worker's; its memory is freed once no array of it is left).
_attached: dict[str, tuple[mmap.mmap, float]] = {}


def _attach(address: SlotAddress) -> mmap.mmap:
    now = time.monotonic()
    buffer = _attached.get(address.token, (None, 0.0))[0]
    if buffer is None:
        buffer = _open(address)
        for token in [t for t, (_, used) in _attached.items() if now - used > _IDLE_S]:
            del _attached[token]
    _attached[address.token] = buffer, now
    return buffer


def _open(address: SlotAddress) -> mmap.mmap:
    """Map the worker's file; ObservationsLost if it is gone (its pid maybe another's now)."""
    path = f"/proc/{address.pid}/fd/{address.fd}"

    def lost(why) -> ObservationsLost:
        return ObservationsLost(f"rollout worker observations at {path}: {why}")

    def refused(err: OSError) -> OSError:  # e.g. not allowed: every fragment would be lost
        return OSError(
            f"cannot map a rollout worker's observations at {path}: {err}. Set "
            "rollout.shared_observations=false to send them through Ray's object store."
        )

    try:
        target = os.readlink(path)
        if not target.startswith(f"/memfd:{_NAME}"):  # the pid was reused: another file
            raise lost(f"another file now ({target})")
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, ProcessLookupError) as err:  # the worker process is gone
        raise lost(err) from err
    except OSError as err:
        raise refused(err) from err
    try:
        buffer = mmap.mmap(fd, address.size)
    except (OSError, ValueError) as err:  # a smaller file: not the worker's
        raise lost(err) from err
    finally:
        os.close(fd)
    if buffer[:_TOKEN] != address.token.encode():  # another worker's file at that pid and fd
        raise lost("another file now")
    return buffer


def _views(buffer, address: SlotAddress) -> dict[str, np.ndarray]:
    return {
        key: np.frombuffer(
            buffer, np.dtype(dtype), int(np.prod(shape)), offset=address.offset + offset
        ).reshape(shape)
        for key, offset, shape, dtype in address.layout
    }


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN
