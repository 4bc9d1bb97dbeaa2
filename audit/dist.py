"""Data-parallel runs through an existing launcher (`torchrun`, `accelerate launch`): this module only
reads the rank the launcher sets and starts torch.distributed's process group; no home-made cluster code.

`train` sums gradients across ranks (NCCL on GPUs, gloo on CPU). `score` needs no collective but
barriers (each rank writes its own cache parts, rank 0 merges), so it always uses gloo, which also
spans nodes; the cache folder must then be on a filesystem every rank sees.
"""

from __future__ import annotations

import os
from datetime import timedelta


def launched_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(backend: str | None = None, timeout_h: float = 24.0) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun / accelerate."""
    import torch
    import torch.distributed as dist

    if launched_world() > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(hours=timeout_h))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str) -> str:
    """`cuda` under a launcher means this rank's GPU (LOCAL_RANK)."""
    if device == "cuda" and launched_world() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
