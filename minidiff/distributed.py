"""Data-parallel training over several processes with torch.distributed, as torchrun starts them.

    torchrun --nproc_per_node 2 -m minidiff train flow-class --out runs/flow-class

torchrun starts N copies of the command and tells each its place in the environment (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Every process holds the whole model and,
MNIST being small, the whole data set; for each global batch of B digits, the batch one
process would take (the epoch's shuffled order is a function of the seed and the epoch):

- process r trains on rows [r B/W, (r + 1) B/W) of it (``rows``): its shard;
- it draws the random numbers of the whole global batch (noise, t, class drops) from the
  run's generator and keeps its rows, so the draws are the one-process run's;
- DistributedDataParallel averages the gradients (an all_reduce), and BatchNorm normalises
  with the statistics of the global batch (``GlobalBatchNorm2d``: torch's SyncBatchNorm
  refuses CPU tensors).

So W processes with B/W digits each take the step one process takes on B digits, up to
the float rounding of sums taken in another order. gloo carries the messages on CPUs,
nccl on GPUs. Only rank 0 writes (logs, progress bar, checkpoints); if one process dies,
torchrun stops the others, and a process that waits longer than ``TIMEOUT`` for the others
gives up with an error instead of hanging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Processes", "from_environment", "start", "stop", "finish_together", "rows", "mean_over_processes",
           "GlobalBatchNorm2d", "use_global_batchnorm", "TIMEOUT"]

TIMEOUT = timedelta(minutes=5)  # how long a process waits for the others at a collective before it fails


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the run's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def from_environment() -> Processes:
    """The process's place as torchrun sets it (RANK, WORLD_SIZE, LOCAL_RANK); without torchrun, one process."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    values = {n: os.environ.get(n) for n in names}
    if values["WORLD_SIZE"] is None:
        return Processes()
    try:
        rank, world, local = (int(values[n] or 0) for n in names)
    except ValueError:
        raise ValueError(f"torchrun's environment is not numbers: {values}; start training with torchrun") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside 0..WORLD_SIZE-1 = {world - 1}; start training with torchrun")
    return Processes(rank, world, local)


def start(device: torch.device) -> tuple[Processes, torch.device]:
    """Join the process group torchrun prepared: gloo on CPU, nccl on CUDA (each process its own GPU,
    cuda:LOCAL_RANK). With one process there is nothing to join. Returns (processes, device)."""
    procs = from_environment()
    if not procs.parallel:
        return procs, device
    if device.type == "cuda":
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return procs, device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def finish_together(procs: Processes) -> None:
    """Wait here until every process has finished its work (rank 0 saves the model while the others are done).

    A process that leaves the group closes its connections; gloo can answer a peer that closes
    while it still works by aborting (SIGABRT), so after a run that succeeded none leaves first.
    Not after a failure: the others may never arrive, and stop() alone must let the process go.
    """
    if procs.parallel:
        dist.barrier()


def rows(procs: Processes, batch: int) -> slice | None:
    """This process's rows of a global batch of `batch` (None with one process: all of them)."""
    if not procs.parallel:
        return None
    if batch % procs.world_size:
        raise ValueError(f"the batch size {batch} must be a multiple of the {procs.world_size} processes, so that "
                         f"each takes an equal share; use --batch-size {batch - batch % procs.world_size or procs.world_size}")
    share = batch // procs.world_size
    return slice(procs.rank * share, (procs.rank + 1) * share)


def mean_over_processes(value: torch.Tensor, procs: Processes) -> float:
    """The mean of a scalar over all processes (every process gets it): the global batch's loss."""
    if not procs.parallel:
        return float(value.detach())
    total = value.detach().double().reshape(1).clone()
    dist.all_reduce(total)
    return float(total) / procs.world_size


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, over all processes.

    For inputs x_r (B_r, C, H, W) on process r, with N = sum_r B_r H W:

        mean = sum_r sum(x_r) / N,   var = sum_r sum(x_r^2) / N - mean^2

    both sums in one differentiable all_reduce (``torch.distributed.nn.functional``), so the
    gradient flows through the other processes' statistics as it does within one batch. The
    running statistics take the unbiased var, as BatchNorm2d does. In eval mode, and with one
    process, it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:c] / n
        var = sums[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, c, 1, 1)
        x_hat = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return x_hat * self.weight.reshape(shape) + self.bias.reshape(shape)


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """model with every BatchNorm2d turned into a GlobalBatchNorm2d (same parameters and buffers, in place)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
    return model
