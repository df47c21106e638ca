"""The global batch under DDP and exact gradient accumulation for batch-level losses (kexue.fm/archives/8471).

The DDP tests run one `torchrun` job of 2 CPU processes (gloo) that trains one step of the real BiEncoder
under Lightning's DDP strategy, once per case, and records what the optimizer sees; the references are
computed here, in a single process, on the concatenated batch. Run as a script, this file is that job.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lit_models.bi_encoder import BiEncoder
from lit_models.components.init import bert
from lit_models.components.losses import CoSENTLoss, FlatNCELoss, InfoNCELoss, SBERTLoss
from lit_models.components.nn.transformer import TransformerConfig, TransformerEncoder
from lit_models.components.schedules import constant
from text.info import DataInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PAIRS, LENGTH, VOCAB = 8, 6, 40
LOSSES = {"cosent": CoSENTLoss, "infonce": functools.partial(InfoNCELoss, temperature=0.1),
          "flatnce": functools.partial(FlatNCELoss, temperature=0.1, symmetric=True)}
# (case, loss, contrastive_accumulation, pairs per rank): the DDP job runs each case on 2 processes.
DDP_CASES = [("cosent", "cosent", 1, 4), ("infonce", "infonce", 1, 4), ("infonce_accumulated", "infonce", 2, 4)]


class TinyBackbone(nn.Module):
    """A one-block Transformer of lit_models/nn: the backbone interface (hidden states of every layer)."""

    from_scratch = True

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.encoder = TransformerEncoder(TransformerConfig(vocab_size=VOCAB, hidden_size=16, num_layers=1,
                                                            num_heads=2, ffn_size=32, max_position=LENGTH,
                                                            dropout=dropout))
        self.hidden_size = 16

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids, attention_mask)


def build_model(loss: str, accumulation: int = 1, dropout: float = 0.0, state: dict | None = None) -> BiEncoder:
    torch.manual_seed(0)
    model = BiEncoder(backbone=TinyBackbone(dropout), loss=LOSSES[loss](), optimizer=functools.partial(
        torch.optim.SGD, lr=0.1), scheduler=constant, init=bert, monitor="val/spearman",
        contrastive_accumulation=accumulation, data=DataInfo("test"))
    if state is not None:
        model.load_state_dict(state)
    return model


def make_pairs(n: int = PAIRS, seed: int = 0) -> list[tuple]:
    """(first ids, first mask, second ids, second mask, label): random tokens, padded, 6 of 8 pairs similar."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        sentence = []
        for _ in range(2):
            length = int(torch.randint(2, LENGTH + 1, (1,), generator=g))
            ids = torch.zeros(LENGTH, dtype=torch.long)
            ids[:length] = torch.randint(1, VOCAB, (length,), generator=g)
            sentence += [ids, (ids > 0).long()]
        pairs.append((*sentence, torch.tensor(float(i % 4 != 3))))
    return pairs


def collate(pairs: list[tuple]) -> dict:
    first, first_mask, second, second_mask, labels = zip(*pairs)
    return {"input_ids": torch.stack(first + second), "attention_mask": torch.stack(first_mask + second_mask),
            "labels": torch.stack(labels)}


class Recorder(L.Callback):
    """The random state at the batch's start, the gradients the optimizer steps with, the logged loss."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rng = torch.get_rng_state()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = float(trainer.callback_metrics["train/loss"])


def train_one_step(model: BiEncoder, pairs: list[tuple], batch_size: int, root: Path, **trainer) -> Recorder:
    recorder = Recorder()
    L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=root,
              callbacks=[recorder], **trainer).fit(
        model, train_dataloaders=DataLoader(pairs, batch_size=batch_size, collate_fn=collate))
    return recorder


def full_batch(model: BiEncoder, pairs: list[tuple]) -> tuple[float, dict]:
    """Single-process training on all pairs at once: the loss and the parameter gradients."""
    batch = collate(pairs)
    u, v = model.pair_embeddings(batch)
    loss = model.loss(u, v, batch["labels"])
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(got: dict, expected: dict, atol: float = 1e-5):
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=atol, rtol=1e-4), \
            f"{name}: max difference {(got[name] - grad).abs().max():.2e}"
    assert max(g.abs().max() for g in expected.values()) > 1e-3      # not a comparison of zeros


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_job(folder: Path) -> None:
    """One process of the torchrun job: every DDP case, then the gather of uneven rows; results to `folder`."""
    import torch.distributed as dist

    from lit_models.components.distributed import gather_with_grad

    torch.set_num_threads(1)
    spec = torch.load(folder / "spec.pt", weights_only=False)
    for case, loss, accumulation, per_rank in DDP_CASES:
        model = build_model(loss, accumulation, state=spec["states"][loss])
        recorder = train_one_step(model, spec["pairs"], per_rank, folder, strategy="ddp", devices=2)
        torch.save({"loss": recorder.loss, "grads": recorder.grads}, folder / f"{case}_rank{dist.get_rank()}.pt")
    rank = dist.get_rank()
    rows = torch.arange(3 + 2 * rank, dtype=torch.float64)[:, None].repeat(1, 2).add(10 * rank).requires_grad_()
    gathered = gather_with_grad(rows)
    weights = torch.arange(gathered.numel(), dtype=torch.float64).reshape(gathered.shape)
    ((gathered * weights).sum() * (rank + 1)).backward()
    torch.save({"gathered": gathered.detach(), "grad": rows.grad}, folder / f"gather_rank{rank}.pt")
    # Left to interpreter exit, gloo's threads can be torn down while still joinable: std::terminate, SIGABRT.
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    torch.save({"pairs": make_pairs(), "states": {name: build_model(name).state_dict() for name in LOSSES}},
               folder / "spec.pt")
    env = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                           "--master-addr=127.0.0.1", f"--master-port={free_port()}", __file__, str(folder)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return folder


@pytest.mark.parametrize("case", [case for case, *_ in DDP_CASES])
def test_ddp_global_batch_gives_single_process_loss_and_gradients(ddp, case):
    """2 ranks × 4 pairs, gathered (and accumulated in 2 micro-batches per rank for *_accumulated): the logged
    loss and the gradients after DDP's averaging equal one process on the 8 pairs."""
    loss_name = next(loss for name, loss, *_ in DDP_CASES if name == case)
    spec = torch.load(ddp / "spec.pt", weights_only=False)
    loss, grads = full_batch(build_model(loss_name, state=spec["states"][loss_name]), spec["pairs"])
    for rank in range(2):
        result = torch.load(ddp / f"{case}_rank{rank}.pt")
        assert result["loss"] == pytest.approx(loss, abs=1e-5)
        assert_same_gradients(result["grads"], grads)


def test_ddp_local_batches_alone_give_another_loss(ddp):
    """The check above has teeth: the mean of the ranks' local InfoNCE losses is not the global one."""
    spec = torch.load(ddp / "spec.pt", weights_only=False)
    model = build_model("infonce", state=spec["states"]["infonce"])
    local = [full_batch(model, spec["pairs"][rank::2])[0] for rank in range(2)]
    assert abs(sum(local) / 2 - torch.load(ddp / "infonce_rank0.pt")["loss"]) > 1e-3


def test_gather_with_grad_concatenates_uneven_ranks_and_sums_gradients(ddp):
    rank0, rank1 = (torch.load(ddp / f"gather_rank{rank}.pt") for rank in range(2))
    rows = [torch.arange(3 + 2 * r, dtype=torch.float64)[:, None].repeat(1, 2).add(10 * r) for r in range(2)]
    assert torch.equal(rank0["gathered"], torch.cat(rows)) and torch.equal(rank1["gathered"], torch.cat(rows))
    weights = torch.arange(16, dtype=torch.float64).reshape(8, 2)
    # d/d(rows of rank r) of Σ_r' (r' + 1)·⟨gathered, weights⟩ = (1 + 2)·weights[rows of r]
    assert torch.equal(rank0["grad"], 3 * weights[:3]) and torch.equal(rank1["grad"], 3 * weights[3:])


@pytest.mark.parametrize("loss, k", [("cosent", 3), ("infonce", 4), ("flatnce", 2)])
def test_contrastive_accumulation_equals_full_batch_gradient(tmp_path, loss, k):
    pairs = make_pairs()
    recorder = train_one_step(build_model(loss, k), pairs, PAIRS, tmp_path, devices=1)
    expected_loss, expected = full_batch(build_model(loss), pairs)
    assert recorder.loss == pytest.approx(expected_loss, abs=1e-5)
    assert_same_gradients(recorder.grads, expected)


def test_contrastive_accumulation_replays_dropout_masks(tmp_path):
    """With dropout, step 3 redraws each micro-batch's masks of step 1: the gradient is exactly that of the
    whole batch's loss under those masks (the reference re-draws them from the recorded random state)."""
    pairs, k = make_pairs(), 2
    recorder = train_one_step(build_model("infonce", k, dropout=0.3), pairs, PAIRS, tmp_path, devices=1)
    model, batch = build_model("infonce", dropout=0.3), collate(pairs)
    torch.set_rng_state(recorder.rng)
    parts = []
    for rows in torch.arange(PAIRS).tensor_split(k):
        rows = torch.cat([rows, rows + PAIRS])
        parts.append(model.embed(batch["input_ids"][rows], batch["attention_mask"][rows]).chunk(2))
    u, v = (torch.cat(p) for p in zip(*parts))
    loss = model.loss(u, v, batch["labels"])
    loss.backward()
    assert recorder.loss == pytest.approx(loss.item(), abs=1e-5)
    assert_same_gradients(recorder.grads, {n: p.grad for n, p in model.named_parameters()})
    _, other_masks = full_batch(build_model("infonce", dropout=0.3), pairs)
    assert max((other_masks[n] - p.grad).abs().max() for n, p in model.named_parameters()) > 1e-3


def test_loss_gradients_are_the_posts_closed_form_for_infonce():
    """kexue.fm/archives/8471: L = Σ_i [log Σ_j e^{s_ij} − Σ_j t_ij s_ij] has ∇L = ∇ Σ_ij (sg(p_ij) − t_ij) s_ij.
    For InfoNCELoss, s_ij = ⟨û_i, v̂_j⟩/τ over the anchors A (rows divided by |A|), so ∂L/∂û = (P − T) v̂ / τ,
    ∂L/∂v̂ = (P − T)ᵀ û / τ, and ∂L/∂u = (I − û ûᵀ) ∂L/∂û / ‖u‖; autograd on the embeddings must give the same."""
    torch.manual_seed(0)
    u, v = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([1.0, 1, 0, 1, 0, 1], dtype=torch.float64)
    model = build_model("infonce")
    loss, grad_u, grad_v = model.loss_gradients(u, v, labels)
    tau, anchors = 0.1, labels.nonzero().squeeze(1)
    uh, vh = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
    p_minus_t = torch.zeros(6, 6, dtype=torch.float64)
    p_minus_t[anchors] = (torch.softmax(uh[anchors] @ vh.T / tau, -1) - torch.eye(6, dtype=torch.float64)[anchors])
    p_minus_t /= len(anchors)
    to_raw = lambda g, x: (g - (g * F.normalize(x, dim=-1)).sum(-1, keepdim=True) * F.normalize(x, dim=-1)) \
        / x.norm(dim=-1, keepdim=True)
    assert torch.allclose(grad_u, to_raw(p_minus_t @ vh / tau, u), atol=1e-12)
    assert torch.allclose(grad_v, to_raw(p_minus_t.T @ uh / tau, v), atol=1e-12)


def test_loss_gradients_are_the_posts_h_tilde_in_its_own_setting():
    """The post's setting: one set h, s_ij = ⟨h_i, h_j⟩, t pairs i with its partner; the gradient w.r.t. h is
    h̃_i = 2 Σ_j (p̄_ij − t_ij) h_j with p̄ = (p + pᵀ)/2, the post's 'label vector'."""

    class PostLoss(nn.Module):
        global_batch = True

        def forward(self, u, v, labels):
            h = torch.cat([u, v])
            t = torch.eye(len(h), dtype=h.dtype).roll(len(u), dims=1)    # h_i's partner: i ± n
            return -(t * torch.log_softmax(h @ h.T, dim=-1)).sum()

    torch.manual_seed(1)
    u, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    model = build_model("infonce")
    model.loss = PostLoss()
    _, grad_u, grad_v = model.loss_gradients(u, v, torch.ones(4))
    h = torch.cat([u, v])
    p, t = torch.softmax(h @ h.T, dim=-1), torch.eye(8, dtype=h.dtype).roll(4, dims=1)
    h_tilde = 2 * ((p + p.T) / 2 - t) @ h
    assert torch.allclose(torch.cat([grad_u, grad_v]), h_tilde, atol=1e-12)


def test_contrastive_accumulation_refuses_per_pair_losses():
    with pytest.raises(ValueError, match="contrastive_accumulation=2 is for batch-level losses"):
        BiEncoder(backbone=TinyBackbone(), loss=SBERTLoss(hidden_size=16), optimizer=torch.optim.SGD,
                  scheduler=constant, init=bert, monitor="val/spearman", contrastive_accumulation=2,
                  data=DataInfo("test"))


if __name__ == "__main__":
    ddp_job(Path(sys.argv[1]))


def test_hydra_multirun_of_ddp_jobs_keeps_one_folder_per_job(tmp_path):
    """Lightning re-runs the command line for rank 1; with `-m` that would be the whole sweep."""
    from tests.conftest import results_of, run_cli

    run_cli(tmp_path, "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2",
            "trainer.max_epochs=1", "logger=csv")
    [sweep] = (tmp_path / "outputs" / "multirun").glob("*/*")       # no second sweep folder from rank 1
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    results = sorted(results_of(tmp_path), key=lambda r: r["seed"])
    assert [(r["status"], r["seed"]) for r in results] == [("completed", 1), ("completed", 2)]
    for job, result in zip(("0", "1"), results):
        assert (sweep / job / "train_ddp_process_1.log").is_file()     # rank 1 ran inside its own job's folder
        assert result["throughput"]["train_examples"] == 600            # both ranks' pairs counted
