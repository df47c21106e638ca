"""Every `weighting=` choice: how task=multitask combines its tasks' losses into one (kexue.fm/archives/8870).

A scheme is a module called with the losses of the tasks in this step, by task name, and the shared
encoder's parameters; it returns the one loss to backpropagate. Each returns the post's combined loss over
the tasks present, so its autograd gradient is the post's.

One task per step. Every training batch holds one task's examples (CoSENT ranks the pairs of one data set),
so a step sees one L_i. Every scheme but one is a sum of per-task terms that read only their own task (α_i L_i
with a fixed α_i, L_i / sg(L_i), L_i / sg(‖∇L_i‖)): a step backpropagates the present task's term, which is
exactly that term of the post's sum, and an epoch adds every term over every batch. Only the generalized mean
couples the tasks: the absent tasks enter it as sg(a running mean of their loss) (an EMA over their own batches), so
the present task's gradient is weighted as if the others were at their recent level. Per-step batches of every
task would give the exact coupling at the cost of K forward passes per step and a cycling of the small sets;
the EMA keeps one pass per batch and every example once per epoch.

No training step reads a device value on the host: running means, references and norms stay tensors.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from lit_models.components.distributed import world_size

EPS = 1e-12   # a CoSENT batch of equal labels has loss 0 (no ordered pair): divide by ε, not 0


class Weighting(nn.Module):
    """The base of every scheme: L = Σ_i term_i over the tasks of the step.

    `setup(tasks)` gives the task names (the model calls it); `forward(losses, shared)` takes
    {task name: L_i} of the tasks in this step and the shared parameters θ (read by `GradNormalized`).
    """

    def setup(self, tasks: Sequence[str]) -> None:
        self.tasks = list(tasks)

    def forward(self, losses: dict[str, torch.Tensor], shared: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        return sum(self.term(name, loss, shared) for name, loss in losses.items())

    def term(self, name: str, loss: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def summary(self) -> dict:
        """What results.json records of the scheme (its fitted references)."""
        return {"scheme": type(self).__name__}


class Equal(Weighting):
    """Equal weights, eq. (1) of kexue.fm/archives/8870 with α_i = 1: L = Σ_i L_i (the post's α_i = 1/n differs by
    the constant n). With one task it is that task's own training."""

    def term(self, name, loss, shared):
        return loss


class StaticWeighting(Weighting):
    """L = Σ_i L_i / R_i with a reference R_i per task, fixed once before the first training step
    (`fit`, called by the model in on_train_start; a resumed run keeps the checkpoint's).

    `reference(objective, measure, labels)` gives a task's R_i: `measure()` is its mean loss over its first
    `batches` training batches under the initial weights (no gradient, no dropout), `labels()` its train
    labels; `objective` may know a theoretical or prior value (`theoretical_loss()`, `prior_loss(labels)`).
    """

    def __init__(self, batches: int = 8):
        super().__init__()
        if batches < 1:
            raise ValueError(f"weighting.batches must be ≥ 1, got {batches}")
        self.batches = batches

    def setup(self, tasks: Sequence[str]) -> None:
        super().setup(tasks)
        self.register_buffer("references", torch.ones(len(self.tasks)))
        self.register_buffer("fitted", torch.tensor(False))

    def reference(self, objective, measure: Callable[[], torch.Tensor], labels: Callable[[], torch.Tensor]):
        raise NotImplementedError

    def fit(self, references: dict[str, torch.Tensor | float]) -> None:
        for name, value in references.items():
            self.references[self.tasks.index(name)] = torch.as_tensor(value, dtype=torch.float32)
        self.fitted.fill_(True)

    def term(self, name, loss, shared):
        return loss / self.references[self.tasks.index(name)].clamp_min(EPS)

    def summary(self) -> dict:
        return super().summary() | {"references": dict(zip(self.tasks, self.references.tolist()))}


class InitialLoss(StaticWeighting):
    """The initial state, eq. (2) of kexue.fm/archives/8870: L = Σ_i L_i / L_i(init), scale-invariant per task.

    init: measured (the mean loss of each task over its first `batches` training batches, before training) |
        theoretical (log K for a K-class cross-entropy: a fresh head predicts the uniform distribution; a task
        without a theoretical value, e.g. CoSENT, whose initial loss depends on the batch, is measured).
    """

    def __init__(self, init: str = "measured", batches: int = 8):
        super().__init__(batches)
        if init not in ("measured", "theoretical"):
            raise ValueError(f"weighting.init must be measured or theoretical, got {init!r}")
        self.init = init

    def reference(self, objective, measure, labels):
        value = objective.theoretical_loss() if self.init == "theoretical" else None
        return measure() if value is None else value


class PriorLoss(StaticWeighting):
    """The prior state, eq. (3)-(4) of kexue.fm/archives/8870: L = Σ_i L_i / L_i(prior), where a K-class
    cross-entropy's prior loss is the entropy of its train labels' class frequencies p, H = −Σ_k p_k log p_k
    (the loss of a model that only learnt to predict p). A ranking loss (CoSENT) learns nothing from a constant
    prediction, so its prior state is its initial one: such tasks use the measured initial loss.
    """

    def reference(self, objective, measure, labels):
        value = objective.prior_loss(labels())
        return measure() if value is None else value


class DynamicLoss(Weighting):
    """The real-time state, eq. (5)-(7) of kexue.fm/archives/8870: L = Σ_i L_i / sg(L_i).

    Every term's value is 1, and ∇(L_i / sg(L_i)) = ∇L_i / L_i = ∇ log L_i: the gradient of Σ_i log L_i, i.e.
    of the geometric mean's direction. train/loss therefore logs n (here 1 per step); train/<task>/loss logs L_i.
    """

    def term(self, name, loss, shared):
        return loss / loss.detach().clamp_min(EPS)


class GeneralizedMean(Weighting):
    """The generalized mean, eq. (9) of kexue.fm/archives/8870: L(γ) = ((1/n) Σ_i L_i^γ)^(1/γ).

    γ = 1 is the arithmetic mean, γ → 0 the geometric mean (Π_i L_i)^(1/n) (γ = 0 is computed as that limit),
    and a larger γ leans on the worst task (L(γ) → max_i L_i as γ → ∞). The tasks absent from a step enter as
    sg(their running loss), an EMA with `momentum` over their own batches (module docstring); a task not seen
    yet does not count in n. For the present task t: ∂L/∂L_t = (1/n)·(L_t / L)^(γ−1).
    """

    def __init__(self, gamma: float = 1.0, momentum: float = 0.9):
        super().__init__()
        if not 0 <= momentum < 1:
            raise ValueError(f"weighting.momentum must be in [0, 1), got {momentum}")
        self.gamma, self.momentum = gamma, momentum

    def setup(self, tasks: Sequence[str]) -> None:
        super().setup(tasks)
        self.register_buffer("running", torch.ones(len(self.tasks)))
        self.register_buffer("seen", torch.zeros(len(self.tasks), dtype=torch.bool))

    def forward(self, losses, shared=()):
        values = torch.stack([losses[name].float() if name in losses else self.running[i]
                              for i, name in enumerate(self.tasks)]).clamp_min(EPS)
        counted = self.seen.clone()
        for name in losses:
            counted[self.tasks.index(name)] = True   # a fill on the device: no copy from the host
        counted = counted.float()
        n = counted.sum()
        if self.gamma == 0:
            combined = torch.exp((counted * values.log()).sum() / n)
        else:
            combined = ((counted * values ** self.gamma).sum() / n) ** (1 / self.gamma)
        if self.training:
            self.update(losses)
        return combined

    @torch.no_grad()
    def update(self, losses: dict[str, torch.Tensor]) -> None:
        for name, loss in losses.items():
            i = self.tasks.index(name)
            value = loss.detach().float()
            self.running[i] = torch.where(self.seen[i], self.momentum * self.running[i] + (1 - self.momentum) * value,
                                          value)
            self.seen[i] = True

    def summary(self) -> dict:
        return super().summary() | {"gamma": self.gamma, "running": dict(zip(self.tasks, self.running.tolist()))}


class GradNormalized(Weighting):
    """Gradient normalization, eq. (11)-(12) of kexue.fm/archives/8870: L = Σ_i L_i / sg(‖∇_θ L_i‖), θ the
    shared encoder's parameters (a task's own head is not in the norm). Its gradient is Σ_i ∇L_i / ‖∇_θ L_i‖:
    each task's gradient normalized, invariant to a scale and a shift of any L_i.

    The norm costs one more backward pass through the encoder per step (autograd.grad, the graph kept for the
    step's own backward). One process only: under DDP each rank would normalize by its own shard's gradient.
    """

    def term(self, name, loss, shared):
        if world_size() > 1:
            raise RuntimeError("weighting=grad_norm runs on one process: under DDP each rank would divide by the "
                               "norm of its own shard's gradient; use another weighting or one device")
        grads = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
        norms = [torch.linalg.vector_norm(g.to(torch.promote_types(g.dtype, torch.float32)))
                 for g in grads if g is not None]
        norm = torch.linalg.vector_norm(torch.stack(norms))
        return loss / norm.clamp_min(EPS)


def class_entropy(labels: torch.Tensor, num_classes: int) -> float:
    """H = −Σ_k p_k log p_k of the class frequencies of `labels` (class ids)."""
    p = torch.bincount(labels.long(), minlength=num_classes).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def uniform_cross_entropy(num_classes: int) -> float:
    """log K: the cross-entropy of a uniform prediction over K classes (a fresh head's)."""
    return math.log(num_classes)
