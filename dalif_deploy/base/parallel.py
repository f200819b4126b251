"""Where the work runs: the torch device, and sharding over processes with torch.distributed.

``verify`` and ``simulate`` started by ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and the rendezvous variables) split the data into
contiguous runs of whole batches, one run per rank (:meth:`World.shard`); each rank computes
its batches exactly as a single process would (the same samples in the same batches), and the
per-batch results are gathered (:meth:`World.gather`) and folded in data set order, so the
results equal a single-process run's. :func:`start` joins the process group (gloo on CPU or
when processes share a GPU, nccl when each has its own) and gives each local process ``cores //
local processes`` torch threads; without a launcher it is a single process and nothing is
initialised.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import DaLifError

#: device names the emulator takes (``cuda:N`` too)
DEVICES = ("cpu", "cuda")
#: how long a rank waits in a collective for the others (rank 0 runs Lava and ONNX alone
#: while the others wait; a rank that fails ends the run at once, see World.gather_call)
GROUP_TIMEOUT = datetime.timedelta(hours=24)
#: how long the ranks may take to gather at the start (:func:`rendezvous`); a rank not there
#: by then is an error naming it. The environment variable sets it in seconds.
RENDEZVOUS_TIMEOUT_S = 300.0
RENDEZVOUS_TIMEOUT_ENV = "DALIF_DEPLOY_RENDEZVOUS_TIMEOUT"
_POLL_S = 0.2  # between looks at who has arrived: signals are handled between them
_CONNECT_S = 2.0  # one attempt to reach the store: a blocking call, so kept short


def rendezvous_timeout() -> float:
    """:data:`RENDEZVOUS_TIMEOUT_S`, or the seconds :data:`RENDEZVOUS_TIMEOUT_ENV` gives."""
    text = os.environ.get(RENDEZVOUS_TIMEOUT_ENV, "").strip()
    if not text:
        return RENDEZVOUS_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:
        raise DaLifError(f"environment variable {RENDEZVOUS_TIMEOUT_ENV}={text!r:.40}: give "
                         "seconds in (0, 86400]")
    return value


def rendezvous(rank: int, size: int, timeout: float | None = None) -> Any:
    """The store of a launch configured by the environment (``MASTER_ADDR``, ``MASTER_PORT``;
    torchrun's own store when it hosts one), once all ``size`` ranks have arrived.

    Bounded and interruptible, unlike torch's ``env://``: the store is reached in short
    attempts and the arrivals are polled, so SIGTERM or Ctrl-C end it at once with the CLI's
    one line, and a rank missing after ``timeout`` seconds (:func:`rendezvous_timeout`) is a
    DaLifError naming the ranks that never came."""
    import time

    import torch.distributed as dist

    timeout = rendezvous_timeout() if timeout is None else timeout
    addr = os.environ.get("MASTER_ADDR", "").strip()
    port_text = os.environ.get("MASTER_PORT", "").strip()
    if not addr or not port_text.isdigit() or not 0 < int(port_text) < 2**16:
        raise DaLifError(f"WORLD_SIZE={size} asks for a process group but MASTER_ADDR "
                         f"({addr or 'unset'}) / MASTER_PORT ({port_text or 'unset'}) do not "
                         "say where it meets; launch with torchrun --nproc-per-node N")
    port = int(port_text)
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    host = rank == 0 and not agent  # else torchrun's agent, or rank 0, hosts the store
    where = f"{addr}:{port}"
    deadline = time.monotonic() + timeout
    store = None
    while store is None:
        left = deadline - time.monotonic()
        try:
            store = dist.TCPStore(addr, port, size, host, datetime.timedelta(
                seconds=max(0.1, min(_CONNECT_S, left))), wait_for_workers=False,
                multi_tenant=host)
        except (RuntimeError, ValueError, OSError) as e:
            if host or left <= 0:
                what = (f"cannot host the process group's store at {where}" if host else
                        f"rank 0's store at {where} was not there within {timeout:g} s")
                raise DaLifError(f"{what} ({str(e).splitlines()[0][:120] if str(e) else e!r});"
                                 " start every rank (torchrun --nproc-per-node N), or set "
                                 f"{RENDEZVOUS_TIMEOUT_ENV}") from None
            time.sleep(_POLL_S)
    tag = "/".join(["dalif-deploy", os.environ.get("TORCHELASTIC_RUN_ID", "run"),
                    os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"), "arrived"])
    store.set(f"{tag}/{rank}", "1")
    keys = [f"{tag}/{r}" for r in range(size)]
    while True:
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        if not missing:
            break
        if time.monotonic() >= deadline:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            raise DaLifError(f"the process group of {size} did not form within {timeout:g} s: "
                             f"rank(s) {shown} never arrived at {where}; start every rank "
                             f"(torchrun --nproc-per-node {size}), or set "
                             f"{RENDEZVOUS_TIMEOUT_ENV} (seconds)")
        time.sleep(_POLL_S)
    store.set_timeout(GROUP_TIMEOUT)
    return store


def resolve_device(name: str | torch.device | None, flag: str = "--device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a :class:`torch.device`, refusing a device this
    machine lacks (``None``: cpu); errors name the option as ``flag``."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "cpu" if name is None else str(name).strip().lower()
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DaLifError(f"{flag} {name}: choose cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DaLifError(f"{flag} {name}: no CUDA device is available to torch "
                             f"{torch.__version__} here; use {flag} cpu")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise DaLifError(f"{flag} {name}: this machine has {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1})")
    return torch.device(name)


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes (``local_size`` of them on this
    machine); ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.size and 0 <= self.local_rank < self.local_size
                and self.local_size <= self.size):
            raise DaLifError(f"rank {self.rank} of {self.size} (local {self.local_rank} of "
                             f"{self.local_size}) is not a valid place in a process group")

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0

    def shard(self, n: int, batch_size: int) -> slice:
        """This rank's samples of ``n``: a contiguous run of whole batches of ``batch_size``
        (so every batch holds the samples a single process would batch together); the
        batches ``ceil(n / batch_size)`` are split as evenly as possible, earlier ranks taking
        the extra ones (rank 0 always holds batch 0 when there is one)."""
        bs = max(1, int(batch_size))
        batches = -(-int(n) // bs)
        lo = -(-self.rank * batches // self.size)
        hi = -(-(self.rank + 1) * batches // self.size)
        return slice(min(lo * bs, n), min(hi * bs, n))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def gather_call(self, fn: Callable[[], Any]) -> list[Any]:
        """Every rank's ``fn()``, in rank order, on every rank; an exception raised on any rank
        (the first in rank order) is raised on every rank, so no rank waits forever for a
        failed one."""
        if self.size == 1:
            return [fn()]
        out: Any = None
        err: BaseException | None = None
        try:
            out = fn()
        except Exception as e:
            err = e
        got = self.gather((out, err))
        for _, e in got:
            if e is not None:
                raise e
        return [o for o, _ in got]

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run by rank 0 alone, its result (or the exception it raised) on every
        rank."""
        if self.size == 1:
            return fn()
        out: Any = None
        err: BaseException | None = None
        if self.main:
            try:
                out = fn()
            except Exception as e:  # re-raised on every rank, so none waits forever
                err = e
        out, err = self.broadcast((out, err))
        if err is not None:
            raise err
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current() -> World:
    """The world of the initialised default process group, else a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    size, rank = dist.get_world_size(), dist.get_rank()
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    local_rank = _env_int("LOCAL_RANK", rank % local_size)
    return World(rank, size, local_rank, local_size)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DaLifError(f"environment variable {name}={value!r} is not an integer "
                         "(set by the launcher, e.g. torchrun)") from None


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return _env_int("WORLD_SIZE", 1) > 1


def local_threads(local_size: int) -> int:
    """Torch threads per process when ``local_size`` processes share this machine's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


def start(device: str | torch.device | None = "cpu", *, rank: int | None = None,
          size: int | None = None, init_method: str | None = None,
          set_threads: bool = True) -> World:
    """Join the process group a launcher set up (``WORLD_SIZE`` > 1 in the environment) or
    the one given (``rank``, ``size``, ``init_method``, e.g. ``file:///tmp/x``); a single
    process otherwise. ``set_threads``: give each process ``cores // local
    processes`` torch threads. Returns the :class:`World` (:func:`stop` leaves it).

    Backend: nccl when ``device`` is ``cuda`` and every local process has a GPU of its own
    (process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``), else gloo: on CPU, and when processes
    share a GPU (NCCL refuses two ranks on one device). Only small pickled results travel
    between the processes, so either is fast enough."""
    import torch.distributed as dist

    if size is None and not launched():
        return World()
    if dist.is_initialized():
        return current()
    dev = resolve_device(device)
    size = _env_int("WORLD_SIZE", 1) if size is None else int(size)
    rank = _env_int("RANK", 0) if rank is None else int(rank)
    local_size = _env_int("LOCAL_WORLD_SIZE", size if init_method else 1)
    local_rank = _env_int("LOCAL_RANK", rank % max(1, local_size))
    world = World(rank, size, local_rank, local_size)
    backend = "gloo"
    if dev.type == "cuda":
        gpus = torch.cuda.device_count()
        torch.cuda.set_device(dev if dev.index is not None else local_rank % gpus)
        if dev.index is None and local_size <= gpus:  # NCCL refuses two ranks on one GPU
            backend = "nccl"
    try:
        if init_method:
            dist.init_process_group(backend, init_method=init_method, rank=rank,
                                    world_size=size, timeout=GROUP_TIMEOUT)
        else:  # bounded and interruptible, where env:// would wait 24 h deaf to signals
            dist.init_process_group(backend, store=rendezvous(rank, size), rank=rank,
                                    world_size=size, timeout=GROUP_TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise DaLifError(f"cannot join the process group of {size} processes as rank {rank}: "
                         f"{e}; launch with torchrun --nproc-per-node N") from None
    if set_threads:
        torch.set_num_threads(local_threads(world.local_size))
    return world


def stop() -> None:
    """Leave the process group (if one was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_device(device: str | torch.device | None, world: World) -> torch.device:
    """The device of this rank: ``cuda`` without an index means ``cuda:LOCAL_RANK`` (one GPU
    per local process, modulo the GPUs present) when sharded."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and world.size > 1:
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return dev
