"""The data-parallel backends the training loop runs on: one process, Horovod, or torch.distributed.

The loop sees only :class:`Dist`: rank and size, a way to make the optimizer
average gradients across ranks, broadcasts of the model/optimizer state and
of small Python objects from rank 0, and a mean over ranks of a float.
"""
from __future__ import annotations

import torch
from torch import nn


class Dist:
    """One process (the tests' backend): every collective is the identity."""

    name = "local"
    rank = 0
    size = 1

    def wrap(self, loss_module: nn.Module) -> nn.Module:
        """The module whose forward(batch) -> loss the loop calls (DDP wraps it)."""
        return loss_module

    def optimizer(self, opt: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        return opt

    def broadcast_state(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        pass

    def broadcast_object(self, obj, name: str = "obj"):
        return obj

    def mean(self, value: float, name: str = "value") -> float:
        return float(value)

    def barrier(self) -> None:
        pass


class HorovodDist(Dist):
    """Horovod over Gloo (CPU) or NCCL (GPU): ``hvd.DistributedOptimizer`` averages gradients."""

    name = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd, self.rank, self.size = hvd, hvd.rank(), hvd.size()

    def optimizer(self, opt, model):
        return self.hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())

    def broadcast_state(self, model, opt):
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        self.hvd.broadcast_optimizer_state(opt, root_rank=0)

    def broadcast_object(self, obj, name="obj"):
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def mean(self, value, name="value"):
        return float(self.hvd.allreduce(torch.tensor([float(value)]), name=name, op=self.hvd.Average)[0])

    def barrier(self):
        self.hvd.join()


class TorchDist(Dist):
    """torch.distributed (Gloo on CPU) with DistributedDataParallel, as PySpark's TorchDistributor starts it."""

    name = "torch"

    def __init__(self) -> None:
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("gloo")
        self.td, self.rank, self.size = td, td.get_rank(), td.get_world_size()

    def wrap(self, loss_module):
        return nn.parallel.DistributedDataParallel(loss_module)

    def broadcast_state(self, model, opt):
        for t in model.state_dict().values():
            self.td.broadcast(t, src=0)
        # Optimizer state: rank 0's full state dict, loaded on the others (empty before the first step).
        state = self.broadcast_object(opt.state_dict() if self.rank == 0 else None)
        if self.rank != 0:
            opt.load_state_dict(state)

    def broadcast_object(self, obj, name="obj"):
        box = [obj]
        self.td.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value, name="value"):
        t = torch.tensor([float(value)])
        self.td.all_reduce(t)
        return float(t[0]) / self.size

    def barrier(self):
        self.td.barrier()
