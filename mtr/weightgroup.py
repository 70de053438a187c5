"""A collective group of its own for weight sync: the learner is rank 0, each rollout engine worker one more rank.

The object-store path moves weights as pickled bytes through Ray and copies them at each end; a collective
broadcast moves each bucket once, from rank 0 to every worker: NCCL between GPUs, gloo over TCP on CPU. The
group is stateless (nothing global in `torch.distributed` is set), so it never touches DeepSpeed's training
group or vLLM's own, and the processes can be on any nodes that reach rank 0's address.

A sync is a header (the version and where each tensor sits in which bucket, msgpack) and then one flat
uint8 buffer per bucket. Receivers hand the tensors on as each bucket arrives, so the engine loads bucket k
while bucket k+1 is still on the wire. The sender stages its weights at publish time (in the broadcast
dtype, on its device): the learner may train on while the rollout workers are still busy generating, and the
broadcast then sends exactly the version that was published.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import msgpack

from mtr.weights import SUPPORTED_DTYPES, bucketed

if TYPE_CHECKING:
    import torch

BACKENDS = ("gloo", "nccl")
_STORE_PREFIX = "mtr-weight-group"


class WeightGroupError(RuntimeError):
    """The group could not form, or a sync could not complete (a rank left, timed out, or sent a bad header)."""


@dataclass(frozen=True)
class StagedWeights:
    """One version, packed into flat buffers ready to broadcast, and the header that describes them."""

    version: int
    header: bytes
    buffers: list[torch.Tensor]

    @property
    def bytes(self) -> int:
        return sum(int(b.numel()) for b in self.buffers)


def backend_for(device: str) -> str:
    """NCCL when the weights live on a GPU, gloo otherwise."""
    return "nccl" if device.startswith("cuda") else "gloo"


def stage(
    version: int,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    dtype: str,
    bucket_bytes: int,
    device: str,
    reuse: StagedWeights | None = None,
) -> StagedWeights:
    """Copy `named_tensors` in `dtype` into buckets of about `bucket_bytes`, one flat buffer each on `device`.

    `reuse`: an earlier staging whose buffers may be overwritten (nobody is sending it any more). Each version
    of a model has the same bucket sizes, so its buffers are filled again instead of allocating (and
    page-faulting) the whole model's bytes anew at every update.
    """
    import torch

    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported weight dtype {dtype!r}; expected one of {SUPPORTED_DTYPES}")
    target = getattr(torch, dtype)
    buffers, layout = [], []
    for bucket in bucketed(named_tensors, lambda item: item[1].numel() * target.itemsize, bucket_bytes):
        size = sum(tensor.numel() * target.itemsize for _, tensor in bucket)
        spare = reuse.buffers[len(buffers)] if reuse is not None and len(buffers) < len(reuse.buffers) else None
        if spare is not None and spare.numel() == size and str(spare.device) == str(torch.device(device)):
            flat = spare
        else:
            flat = torch.empty(size, dtype=torch.uint8, device=device)
        entries, offset = [], 0
        for name, tensor in bucket:
            nbytes = tensor.numel() * target.itemsize
            source = tensor.detach().to(device=device, dtype=target).contiguous().reshape(-1).view(torch.uint8)
            flat[offset : offset + nbytes].copy_(source)
            entries.append([name, dtype, list(tensor.shape), offset, nbytes])
            offset += nbytes
        buffers.append(flat)
        layout.append({"bytes": size, "tensors": entries})
    header = msgpack.packb({"version": version, "buckets": layout})
    return StagedWeights(version, header, buffers)


class WeightGroup:
    """One member of the group. Rank 0 sends (`send`), every other rank receives (`receive`)."""

    def __init__(self, backend_group, rank: int, world_size: int, device: str, store, address: str) -> None:
        self._group = backend_group
        self.address = address
        self._store = store  # rank 0's store must outlive the group: the other ranks' connections go through it
        self.rank = rank
        self.world_size = world_size
        self.device = device

    # -- forming the group --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, host: str, world_size: int, backend: str, timeout_s: float, device: str) -> PendingGroup:
        """Rank 0: listen on `host` (port picked freely) and form the group in the background as ranks join."""
        from torch.distributed import TCPStore

        _check(backend, world_size)
        timeout = timedelta(seconds=timeout_s)
        store = TCPStore(host.strip("[]"), 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        return PendingGroup(f"{host}:{store.port}", store, world_size, backend, timeout, device)

    @classmethod
    def join(cls, address: str, rank: int, world_size: int, backend: str, timeout_s: float, device: str) -> WeightGroup:
        """Ranks 1..: connect to rank 0's address; returns once every rank has joined."""
        from torch.distributed import TCPStore

        _check(backend, world_size)
        if not 0 < rank < world_size:
            raise ValueError(f"a joining rank must be in 1..{world_size - 1}, got {rank}")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"weight group address must be host:port, got {address!r}")
        timeout = timedelta(seconds=timeout_s)
        try:
            store = TCPStore(host.strip("[]"), int(port), world_size, is_master=False, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - torch raises several kinds; the caller needs the address
            raise WeightGroupError(f"cannot reach the weight group at {address}: {exc}") from exc
        group = _backend_group(backend, store, rank, world_size, timeout)
        return cls(group, rank, world_size, device, store, address)

    # -- one sync -----------------------------------------------------------------------------------------------
    def send(self, staged: StagedWeights) -> int:
        """Broadcast the header, then every bucket; returns the bytes sent. Blocks until all ranks received."""
        self._send_header(staged.header)
        for buffer in staged.buffers:
            if buffer.numel():
                self._broadcast(buffer)
        return staged.bytes

    def send_error(self, message: str) -> None:
        """Tell every receiver waiting for a sync that none is coming, and why (they raise it)."""
        self._send_header(msgpack.packb({"error": message}))

    def _send_header(self, header: bytes) -> None:
        import torch

        if self.rank != 0:
            raise WeightGroupError(f"only rank 0 sends weights; this is rank {self.rank}")
        raw = torch.frombuffer(bytearray(header), dtype=torch.uint8).to(self.device)
        self._broadcast(torch.tensor([raw.numel()], dtype=torch.int64, device=self.device))
        self._broadcast(raw)

    def receive(self) -> tuple[int, Iterator[tuple[str, torch.Tensor]]]:
        """The version being sent and its tensors, bucket by bucket as they arrive.

        The iterator must be run to its end: the sender broadcasts every bucket, so a receiver that stopped
        early would leave the group out of step. If the consumer stops, the rest is drained and dropped.
        """
        import torch

        size = torch.zeros(1, dtype=torch.int64, device=self.device)
        self._broadcast(size)
        raw = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        self._broadcast(raw)
        try:
            header = msgpack.unpackb(raw.cpu().numpy().tobytes())
        except Exception as exc:  # noqa: BLE001 - a bad header is fatal to the group; say what arrived
            raise WeightGroupError(f"weight group: unreadable header of {int(size.item())} bytes: {exc}") from exc
        if "error" in header:
            raise WeightGroupError(f"the sender has no weights to send: {header['error']}")
        return int(header["version"]), self._tensors(header["buckets"])

    def _tensors(self, buckets: list[dict]) -> Iterator[tuple[str, torch.Tensor]]:
        """Bucket k's tensors are yielded while bucket k+1 is already being received (asynchronously), so the
        engine loads one bucket while the next is on the wire; at most two buckets are held at once."""
        import torch

        started = 0  # buckets whose broadcast has been posted
        in_flight = None  # (flat buffer, work) of the bucket being received
        try:
            if buckets:
                in_flight, started = self._post(buckets[0]), 1
            while in_flight is not None:
                flat, work = in_flight
                in_flight = None
                self._wait(work)
                bucket = buckets[started - 1]
                if started < len(buckets):
                    in_flight, started = self._post(buckets[started]), started + 1
                for name, dtype, shape, offset, nbytes in bucket["tensors"]:
                    view = flat[offset : offset + nbytes].view(getattr(torch, dtype)).reshape(shape)
                    yield name, view
        finally:
            # The consumer stopped early (or a load failed): keep in step with the sender, which sends them all.
            if in_flight is not None:
                self._wait(in_flight[1])
            for bucket in buckets[started:]:
                self._wait(self._post(bucket)[1])

    def _post(self, bucket: dict) -> tuple[torch.Tensor, object | None]:
        """Start receiving one bucket into a new buffer; returns the buffer and the pending work (None if empty)."""
        import torch

        flat = torch.empty(int(bucket["bytes"]), dtype=torch.uint8, device=self.device)
        return flat, (self._start_broadcast(flat) if flat.numel() else None)

    def _start_broadcast(self, tensor: torch.Tensor):
        from torch.distributed import BroadcastOptions

        options = BroadcastOptions()
        options.rootRank = 0
        options.rootTensor = 0
        try:
            return self._group.broadcast([tensor], options)
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors name no peer; add what we know
            raise self._failure(exc) from exc

    def _wait(self, work) -> None:
        if work is None:
            return
        try:
            work.wait()
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL errors name no peer; add what we know
            raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> WeightGroupError:
        return WeightGroupError(f"weight group broadcast failed at rank {self.rank} of {self.world_size}: {exc}")

    def _broadcast(self, tensor: torch.Tensor) -> None:
        self._wait(self._start_broadcast(tensor))


class PendingGroup:
    """Rank 0 while the other ranks join: `address` is known at once, `wait()` gives the group once formed."""

    def __init__(self, address: str, store, world_size: int, backend: str, timeout: timedelta, device: str) -> None:
        self.address = address
        self.backend = backend
        self.world_size = world_size
        self._done = threading.Event()
        self._group: WeightGroup | None = None
        self._error: BaseException | None = None
        self._timeout = timeout

        def form() -> None:
            try:
                group = _backend_group(backend, store, 0, world_size, timeout)
                self._group = WeightGroup(group, 0, world_size, device, store, address)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                self._error = exc
            finally:
                self._done.set()

        threading.Thread(target=form, name="mtr-weight-group", daemon=True).start()

    def wait(self) -> WeightGroup:
        if not self._done.wait(self._timeout.total_seconds() + 30):
            raise WeightGroupError(f"weight group at {self.address}: not every rank joined in {self._timeout}")
        if self._error is not None:
            message = f"weight group at {self.address} did not form ({self.world_size} ranks): {self._error}"
            raise WeightGroupError(message) from self._error
        return self._group


def _check(backend: str, world_size: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown weight group backend {backend!r}; expected one of {BACKENDS}")
    if world_size < 2:
        raise ValueError(f"a weight group needs a sender and at least one receiver, got world_size {world_size}")


def _backend_group(backend: str, store, rank: int, world_size: int, timeout: timedelta):
    """A gloo or NCCL group over `store`'s rendezvous; blocks until all `world_size` ranks are connected."""
    from torch.distributed import PrefixStore

    prefix = PrefixStore(_STORE_PREFIX, store)
    if backend == "gloo":
        from torch.distributed.distributed_c10d import ProcessGroupGloo

        return ProcessGroupGloo(prefix, rank, world_size, timeout)
    from torch.distributed.distributed_c10d import ProcessGroupNCCL

    options = ProcessGroupNCCL.Options()
    options._timeout = timeout
    return ProcessGroupNCCL(prefix, rank, world_size, options)
