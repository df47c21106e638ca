"""The training loss of a task replayed as CUDA graphs: one forward and one backward launch per step.

At the seeds' batch sizes a pretrained encoder's step is hundreds of small kernels, and the GPU waits for the
host to launch them. A CUDA graph records those launches once and replays them with one call, so the step
costs what the GPU needs. A graph fixes the shapes it was recorded with, so there is one per batch shape
(`speed.pad_to_multiple_of` keeps those few) and the first batch of each shape records it.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def signature(batch: dict) -> tuple | None:
    """The shapes and dtypes of a batch's fields: equal signatures replay the same graph. None when a field is
    not a CUDA tensor (a list of texts), which no graph can take."""
    fields = []
    for key in sorted(batch):
        value = batch[key]
        if not (isinstance(value, torch.Tensor) and value.is_cuda):
            return None
        fields.append((key, tuple(value.shape), value.dtype))
    return tuple(fields)


class StepGraph:
    """The forward and the backward of one batch signature, recorded as two CUDA graphs.

    The backward graph adds each parameter's gradient into `grads`, the tensors that stay the parameters'
    `.grad`, so a replay leaves nothing for autograd to accumulate on the host. Recording: a few eager passes on
    a side stream (lazy initializations such as cuBLAS workspaces must not happen inside a capture), then the
    capture of each graph into a memory pool of its own.
    """

    def __init__(self, loss_of: Callable, params: list[torch.Tensor], grads: list[torch.Tensor], batch: dict,
                 warmup: int = 3):
        self.inputs = {key: value.clone() for key, value in batch.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                loss, _ = loss_of(self.inputs)
                torch.autograd.grad(loss, params, allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        self.forward, self.backward = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls (a checkpoint being written in the background) stay legal
        with torch.cuda.graph(self.forward, capture_error_mode="thread_local"):
            self.loss, self.size = loss_of(self.inputs)
        self.grad_output = torch.ones_like(self.loss)
        with torch.cuda.graph(self.backward, pool=self.forward.pool(), capture_error_mode="thread_local"):
            computed = torch.autograd.grad(self.loss, params, self.grad_output, allow_unused=True)
            used = [(grad, c) for grad, c in zip(grads, computed) if c is not None]
            torch._foreach_add_([grad for grad, _ in used], [c.to(grad.dtype) for grad, c in used])

    def load(self, batch: dict) -> None:
        for key, value in self.inputs.items():
            value.copy_(batch[key], non_blocking=True)


class Replay(torch.autograd.Function):
    """Autograd's view of a graph replay: forward replays the forward graph; backward copies the incoming
    gradient of the loss into place and replays the backward graph, which has already added every parameter's
    gradient into its `.grad`. `anchor` only makes the loss require grad."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, graph: StepGraph) -> torch.Tensor:
        ctx.graph = graph
        graph.forward.replay()
        return graph.loss.clone()   # the graph's buffer is overwritten by the next replay

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        ctx.graph.grad_output.copy_(grad_loss)
        ctx.graph.backward.replay()
        return None, None


class GraphedLoss:
    """`loss_of(batch) -> (loss, batch size)` with its forward and backward replayed as CUDA graphs, one per batch
    signature (`StepGraph`). The optimizer stays outside: it reads the gradients from `.grad` and updates the
    parameters in place, where every graph reads them.

    The parameters' `.grad` are tensors of this object's, which the backward graphs add into: the task zeroes
    them in place between steps (set_to_none=False), and any it finds replaced (an optimizer or a callback set
    them to None) are zeroed and put back. Dropout draws new masks at every replay (a capture registers the CUDA
    generator). Under autocast a capture runs with autocast's weight cache off, so each replay casts the current
    weights. A batch with a field that is not a CUDA tensor, or a signature past `max_graphs`, runs eagerly;
    so does a new signature once less than `min_free` of the device's memory is free (each graph keeps its
    activations' memory: sixteen graphs of a BERT-base step at batch 256 × 128 filled an 80 GB card), and every
    batch after a capture fails (the reason is logged once and reported by `summary`); a failed capture
    releases the graphs recorded so far, so that the eager steps have their memory.

    Args:
        owner: the module whose parameters the loss trains (the task).
        loss_of: the training loss of a batch and the batch size to log it with.
        max_graphs: the most signatures recorded.
        min_free: the share of the device's memory that must be free to record another graph.
    """

    def __init__(self, owner: nn.Module, loss_of: Callable[[dict], tuple[torch.Tensor, int]], max_graphs: int = 16,
                 min_free: float = 0.25):
        self.loss_of, self.max_graphs, self.min_free = loss_of, max_graphs, min_free
        self.memory_full = False
        self.params = [p for p in owner.parameters() if p.requires_grad]
        self.grads: list[torch.Tensor] | None = None
        self.anchor = None
        self.graphs: dict[tuple, StepGraph] = {}
        self.failed: str | None = None
        self.replays = self.eager_steps = 0

    def __call__(self, batch: dict) -> tuple[torch.Tensor, int]:
        key = signature(batch) if self.failed is None else None
        if key is not None and key not in self.graphs and self.room_for_another():
            self.capture(key, batch)
        if key is None or key not in self.graphs:
            self.eager_steps += 1
            return self.loss_of(batch)
        graph = self.graphs[key]
        self.attach_grads()
        graph.load(batch)
        self.replays += 1
        return Replay.apply(self.anchor, graph), graph.size

    def attach_grads(self) -> None:
        """Make each parameter's `.grad` this object's tensor again where something replaced it (set to None:
        zero, which is what None means)."""
        if self.grads is None:
            self.grads = [torch.zeros_like(p) for p in self.params]
            self.anchor = torch.zeros((), device=self.params[0].device, requires_grad=True)
        replaced = [(p, g) for p, g in zip(self.params, self.grads) if p.grad is not g]
        if replaced:
            torch._foreach_zero_([g for _, g in replaced])
            for p, g in replaced:
                p.grad = g

    def room_for_another(self) -> bool:
        """Fewer than max_graphs recorded, and at least `min_free` of the device's memory free (asked only when
        a new signature comes; once full, never again)."""
        if len(self.graphs) >= self.max_graphs or self.memory_full:
            return False
        free, total = torch.cuda.mem_get_info(self.params[0].device)
        if self.graphs and free < self.min_free * total:
            self.memory_full = True
            log.info("CUDA graphs: %d recorded and %.1f of %.1f GiB free; new batch shapes run eagerly",
                     len(self.graphs), free / 2**30, total / 2**30)
        return not self.memory_full

    def capture(self, key: tuple, batch: dict) -> None:
        self.attach_grads()
        accumulated = [g.clone() for g in self.grads]   # the warm-up passes must not touch the gradients
        try:
            with autocast_without_cache():
                self.graphs[key] = StepGraph(self.loss_of, self.params, self.grads, batch)
        except Exception as error:   # e.g. a host sync inside the step: record why and train eagerly
            self.failed = f"{type(error).__name__}: {error}".splitlines()[0]
            log.warning("CUDA graphs off for the rest of the run, the step could not be captured (%s); "
                        "training continues eagerly", self.failed)
            self.graphs.clear()   # their memory pools: the eager steps need the room
            gc.collect()
            torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch._foreach_copy_(self.grads, accumulated)
        if key in self.graphs:
            log.info("CUDA graph %d recorded for batch shapes %s", len(self.graphs),
                     {k: shape for k, shape, _ in key})

    def summary(self) -> dict:
        return {"graphs": len(self.graphs), "replays": self.replays, "eager_steps": self.eager_steps,
                "capture_failed": self.failed, "memory_full": self.memory_full}


def autocast_without_cache():
    """The enclosing CUDA autocast (its dtype), with the weight-cast cache off; a no-op when autocast is off."""
    if not torch.is_autocast_enabled("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
