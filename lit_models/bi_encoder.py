"""task=bi_encoder: a sentence encoder trained on labelled pairs, evaluated by Spearman of cos(u, v) vs gold.

The setting of CoSENT vs Sentence-BERT (kexue.fm/archives/8847) and of BERT-whitening's poolings
(kexue.fm/archives/8069): both sentences go through the same encoder, a pooling turns hidden states
into one vector each, and whatever the training loss, inference compares cosines.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import ParallelStrategy
from torchmetrics import SpearmanCorrCoef

from lit_models.base import Step, TaskModule
from lit_models.components.distributed import loss_batch
from lit_models.components.pooling import check_pooling, encode
from lit_models.components.whitening import StreamingMoments, Whitening

# Spearman needs every score of the split; the STS splits (<= 20k pairs) fit easily, so the warning is noise.
warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all targets")


class BiEncoder(TaskModule):
    """Siamese sentence encoder; `loss` is any pair loss of lit_models/components/losses.py taking (u, v, labels).

    A batch-level loss (`loss.global_batch`) sees the global batch under DDP (`loss_batch`).
    contrastive_accumulation: k ≥ 2 backpropagates each training batch in k micro-batches while the loss still
        sees the whole batch, exactly (`accumulation_step`, kexue.fm/archives/8471); 1 trains the ordinary way.
        This mode optimizes by hand: the one task step the base class does not own.
    whitening: BERT-whitening of the vectors before the cosines of every evaluation (kexue.fm/archives/8069,
        lit_models/components/whitening.py): none | full (every dimension) | k (the first k principal ones; 8321
        keeps 128 for small models, 256 for base). Training never sees it.
    whitening_fit: whose sentences give μ and Σ, refitted at the start of every evaluation with the encoder of
        that moment: train (the train split's, within data.train_limit) | eval (each evaluated split's own, as 8069
        also does) | all (train, valid and test together, those on disk, as the author's chn/eval.py does;
        results.json lists the splits used). Every process fits
        on the whole split, so DDP ranks agree without a reduction.
    """

    LOSS_INPUTS = ("pair_embeddings",)
    DATA_KINDS = ("pairs",)
    CUDA_GRAPHS = True
    EVAL_LOSS = False

    def __init__(self, *, pooling: str = "mean", contrastive_accumulation: int = 1, whitening: str | int | None = None,
                 whitening_fit: str = "train", **common):
        check_pooling(pooling, common["backbone"])
        self.whitening_dim, self.whitening_splits = whitening_options(whitening, whitening_fit)
        width = common["backbone"].hidden_size
        if type(self.whitening_dim) is int and self.whitening_dim > width:
            raise ValueError(f"task.whitening={whitening} keeps more dimensions than the encoder's {width}: "
                             f"use k ≤ {width} or full")
        self.whitening: Whitening | None = None
        if contrastive_accumulation < 1:
            raise ValueError(f"task.contrastive_accumulation must be ≥ 1 (1: off), got {contrastive_accumulation}")
        loss = common["loss"]
        if contrastive_accumulation > 1:
            if not getattr(loss, "global_batch", False):
                raise ValueError(f"task.contrastive_accumulation={contrastive_accumulation} is for batch-level losses "
                                 f"(cosent, infonce, flatnce); {type(loss).__name__} is a mean over pairs, "
                                 f"which trainer.accumulate_grad_batches accumulates exactly")
            if any(p.requires_grad for p in loss.parameters()):
                raise ValueError(f"task.contrastive_accumulation does not support a loss with parameters "
                                 f"({type(loss).__name__}): only the encoder is re-forwarded per micro-batch")
        self.pooling, self.contrastive_accumulation = pooling, contrastive_accumulation
        super().__init__(**common)
        self.automatic_optimization = contrastive_accumulation == 1

    def make_metrics(self, stage: str) -> dict:
        return pair_metrics()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return encode(self.backbone, input_ids, attention_mask, self.pooling)

    def pair_embeddings(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch stacks first sentences then second sentences: one encoder pass for both."""
        return self.embed(batch["input_ids"], batch["attention_mask"]).chunk(2)

    def loss_batch(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor):
        """What the loss sees: under DDP, a batch-level loss gets the pairs of every rank, gathered with
        gradients; the gradients then equal single-process training on the concatenation, with no rescaling
        (derivation in lit_models/components/distributed.py). A per-pair loss gets this rank's pairs."""
        return loss_batch(self.loss, u, v, labels)

    def step(self, batch, stage: str) -> Step:
        u, v = self.pair_embeddings(batch)
        labels = batch["labels"]
        if stage != "train":
            if self.whitening is not None:
                u, v = self.whitening(u), self.whitening(v)
            return Step(None, (cosine(u, v), labels), len(labels))
        return Step(self.loss(*self.loss_batch(u, v, labels)), size=len(labels))

    # --- BERT-whitening at evaluation -------------------------------------------------------------------

    def on_validation_epoch_start(self):
        self.fit_whitening("valid")

    def on_test_epoch_start(self):
        self.fit_whitening("test")

    def fit_whitening(self, evaluated: str) -> None:
        """μ, Σ and W of this encoder's vectors of the `whitening_fit` splits, both sentences of every pair,
        streamed batch by batch (StreamingMoments) in evaluation mode and precision."""
        if self.whitening_dim is None:
            return
        datamodule, moments = self.trainer.datamodule, StreamingMoments()
        splits = [evaluated if split == "eval" else split for split in self.whitening_splits]
        if len(splits) > 1:   # "all": the splits on disk (LCQMC and PAWSX ship no train split here)
            splits = [split for split in splits if datamodule.has_split(split)]
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            for split in splits:
                for batch in datamodule.loader(split):
                    batch = self.transfer_batch_to_device(batch, self.device, 0)
                    moments.update(self.embed(batch["input_ids"], batch["attention_mask"]))
        dim = None if self.whitening_dim == "full" else self.whitening_dim
        self.whitening = Whitening.fit(moments, dim, {"splits": splits}).to(self.device)

    def save_evaluation_state(self, folder: Path) -> dict:
        """whitening.safetensors (μ and W of the last evaluation) and what results.json records of it."""
        if self.whitening is None:
            return {}
        return {"whitening": self.whitening.save(Path(folder) / "whitening.safetensors")}

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self.accumulation_step(batch)
        return super().training_step(batch, batch_idx)

    def loss_gradients(self, u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of the (global) batch and its gradient w.r.t. this rank's embeddings u, v, by autograd.

        For InfoNCE, kexue.fm/archives/8471 gives this gradient in closed form (h̃_i = 2 Σ_j (p̄_ij − t_ij) h_j
        for s_ij = ⟨h_i, h_j⟩); autograd gives it for any loss of the embeddings. Under DDP it is W·∂L/∂u of
        the gather's backward, which DDP's averaging turns into the exact gradient (lit_models/components/distributed.py).
        """
        u, v = (x.detach().to(torch.promote_types(x.dtype, torch.float32)).requires_grad_() for x in (u, v))
        with torch.enable_grad():
            loss = self.loss(*self.loss_batch(u, v, labels))
            grad_u, grad_v = torch.autograd.grad(loss, (u, v))
        return loss.detach(), grad_u, grad_v

    def accumulation_step(self, batch) -> torch.Tensor:
        """One optimizer step on the batch, backpropagated in k = contrastive_accumulation micro-batches, with the
        gradient of the loss on the whole batch (kexue.fm/archives/8471, generalized to any batch-level loss):

        1. without gradients, embed the batch micro-batch by micro-batch: every u_i, v_i;
        2. L on the whole batch (the global batch under DDP) and g = ∂L/∂(u, v) (`loss_gradients`);
        3. per micro-batch m, embed again with gradients and backpropagate the surrogate Σ_{i∈m} ⟨u_i, g_i^u⟩ +
           ⟨v_i, g_i^v⟩ (g held constant): its gradient is Σ_{i∈m} J_iᵀ g_i, and the sum over micro-batches is
           Σ_i J_iᵀ ∂L/∂h_i = ∇_θ L, the full-batch gradient, by the chain rule.
        The post's closed-form g covers InfoNCE; autograd on the embeddings covers CoSENT, FlatNCE, any loss.

        Dropout: the post warns that step 3 draws new dropout masks, so its embeddings are not those of step 1.
        Here the random state before each micro-batch of step 1 is saved and restored before the same
        micro-batch of step 3 (as torch.utils.checkpoint does when recomputing, kexue.fm/archives/7367): both
        passes draw the same masks, and the gradient is that of L under the masks drawn, exactly, with or
        without dropout. Under DDP, gradients are synchronized once, after the last micro-batch.
        The surrogate's value means nothing; train/loss logs L. This mode optimizes manually
        (automatic_optimization = False), so Lightning refuses trainer.gradient_clip_val and
        trainer.accumulate_grad_batches > 1 with it.
        """
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        pairs = torch.arange(len(labels), device=labels.device)
        micro = [m for m in pairs.tensor_split(self.contrastive_accumulation) if len(m)]
        rows = [torch.cat([m, m + len(labels)]) for m in micro]   # the first sentences, then their second ones
        devices = [input_ids.device] if input_ids.device.type == "cuda" else []
        states, embeddings = [], []
        with torch.no_grad():
            for r in rows:
                states.append(random_state(input_ids.device))
                embeddings.append(self.embed(input_ids[r], attention_mask[r]).chunk(2))
        loss, grad_u, grad_v = self.loss_gradients(*(torch.cat(parts) for parts in zip(*embeddings)), labels)
        optimizer.zero_grad()
        for i, (m, r, state) in enumerate(zip(micro, rows, states)):
            with torch.random.fork_rng(devices=devices):   # replay step 1's masks, then continue as after it
                set_random_state(state, input_ids.device)
                u, v = self.embed(input_ids[r], attention_mask[r]).chunk(2)
            surrogate = (u * grad_u[m]).sum() + (v * grad_v[m]).sum()     # promoted to g's fp32 (or fp64)
            with self.no_gradient_sync() if i < len(micro) - 1 else nullcontext():
                self.manual_backward(surrogate)
        optimizer.step()
        scheduler.step()
        self.log("train/loss", loss, batch_size=len(labels))
        return loss

    def no_gradient_sync(self):
        """DDP's no_sync: micro-batch gradients add up locally and are averaged once, with the last backward."""
        strategy = self.trainer.strategy
        return strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()


def random_state(device: torch.device) -> tuple:
    """The random state that dropout on `device` draws from (the CPU generator, and the device's for CUDA)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_random_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def pair_metrics() -> dict:
    """The metric of a pair set: Spearman of the cosines (`cosine`) against the gold labels."""
    return {"spearman": SpearmanCorrCoef()}


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos(u_i, v_i) per pair, in float32: what every evaluation of a pair set ranks."""
    return F.cosine_similarity(u.float(), v.float(), dim=-1)


WHITENING_FITS = {"train": ("train",), "eval": ("eval",), "all": ("train", "valid", "test")}


def whitening_options(whitening: str | int | None, fit: str) -> tuple[str | int | None, tuple[str, ...]]:
    """(None | "full" | k, the splits to fit on) from task.whitening and task.whitening_fit, checked."""
    if fit not in WHITENING_FITS:
        raise ValueError(f"task.whitening_fit must be one of {sorted(WHITENING_FITS)}, got {fit!r}")
    if whitening is None or whitening == "none":
        return None, WHITENING_FITS[fit]
    if whitening == "full" or (type(whitening) is int and whitening > 0):
        return whitening, WHITENING_FITS[fit]
    raise ValueError(f"task.whitening must be none, full or a number of dimensions k > 0, got {whitening!r}")
