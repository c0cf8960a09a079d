"""Single-process or DistributedDataParallel training: device choice, process group and collectives.

`torchrun --nproc_per_node N -m moeisr train ...` sets WORLD_SIZE, RANK and LOCAL_RANK; `setup` then
joins the process group with NCCL on CUDA (one GPU per process: cuda:LOCAL_RANK) or gloo on CPU. Without
those variables (or with WORLD_SIZE=1) training runs in this process on the requested device. Only rank 0
writes logs and checkpoints; every rank reads the run directory, which must be on a shared filesystem.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from moeisr.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process trains. rank/world_size/local_rank are 0/1/0 without torchrun."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # whether `setup` created the process group (and `teardown` must destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' → torch.device; UserError when it is unknown or unavailable."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif parsed.type != "cpu":
        raise UserError(f"device {device!r} is not supported for training; use cpu, cuda or cuda:N")
    return parsed


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str | torch.device = "cpu") -> DistContext:
    """Read torchrun's environment and, when WORLD_SIZE > 1, join the process group (NCCL on CUDA, gloo on CPU).

    With CUDA under torchrun each process uses cuda:LOCAL_RANK (the index in `device`, if any, is ignored).
    """
    parsed = parse_device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext(device=parsed)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if parsed.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node"
            )
        parsed = torch.device("cuda", local_rank)
        torch.cuda.set_device(parsed)
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if parsed.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(parsed, rank, world_size, local_rank, owns_group)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if `setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if `flag` is true on any rank (one tiny all-reduce)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(ctx: DistContext, values: list[float]) -> list[float]:
    """The element-wise mean of `values` over the ranks (the values themselves without DDP)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / ctx.world_size).tolist()


def gather_strings(ctx: DistContext, text: str) -> list[str]:
    """`text` from every rank, in rank order."""
    if not ctx.distributed:
        return [text]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, text)
    return [str(t) for t in out]


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 (hex) of every tensor in `module.state_dict()`, names and bytes: equal digests = identical weights."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(name.encode())
        data = tensor.detach().to("cpu").contiguous()
        sha.update(str((data.dtype, tuple(data.shape))).encode())
        sha.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()
