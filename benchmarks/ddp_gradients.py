"""One optimizer step on one fixed batch: 1 process × B pairs vs N DDP processes × B/N pairs, same gradients?

    python benchmarks/ddp_gradients.py OUT [OVERRIDE ...]                     # 1 process: OUT/grads_1.pt
    torchrun --nproc-per-node=2 benchmarks/ddp_gradients.py OUT [OVERRIDE ...] # OUT/grads_2.pt
    python benchmarks/ddp_gradients.py OUT --compare                           # the table

The model is the one `python run.py OVERRIDE ...` trains (default: the CoSENT bi-encoder of
experiment=cosent_vs_sbert on e5-small-zh and STS-B zh), dropout off so that both runs compute the same
function; the batch is the first `--pairs` training pairs in file order. Each run records the gradients the
optimizer steps with (after DDP's averaging) through Lightning's own training loop, in fp32 without TF32.
--compare also prints the gradient of the mean of the ranks' local losses, what DDP would step with if the
batch-level loss did not gather the other ranks' pairs (lit_models/components/distributed.py): the check has teeth.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
DEFAULTS = ["experiment=cosent_vs_sbert", "backbone=pretrained", "data=stsb", "loss=cosent", "logger=none"]


class GradientRecorder(L.Callback):
    """The gradients the optimizer steps with and the logged loss."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().double().cpu() for n, p in pl_module.named_parameters()
                      if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = float(trainer.callback_metrics["train/loss"])


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[*DEFAULTS, *overrides])


def model_and_pairs(overrides: list[str], pairs: int):
    from run import build

    cfg = compose(overrides)
    L.seed_everything(cfg.seed)
    datamodule, model = build(cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    train = datamodule.dataset("train")
    return model, [train[i] for i in range(pairs)], datamodule.collate


def record(out: Path, overrides: list[str], pairs: int) -> None:
    """One step through Lightning on `pairs` pairs split over the processes torchrun started (or 1)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    model, batch, collate = model_and_pairs(overrides, pairs)
    recorder = GradientRecorder()
    trainer = L.Trainer(accelerator="auto", devices=processes, strategy="ddp" if processes > 1 else "auto",
                        precision="32-true", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=out, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader(batch, batch_size=pairs // processes, collate_fn=collate))
    if trainer.is_global_zero:
        torch.save({"loss": recorder.loss, "grads": recorder.grads, "device": torch.cuda.get_device_name()
                    if torch.cuda.is_available() else "cpu", "pairs_per_process": pairs // processes},
                   out / f"grads_{processes}.pt")


def local_losses_gradient(overrides: list[str], pairs: int, processes: int) -> dict:
    """The gradient of the mean over ranks of each rank's own CoSENT loss (no gather), in one process."""
    model, batch, collate = model_and_pairs(overrides, pairs)
    shards = [collate(batch[rank::processes]) for rank in range(processes)]  # DistributedSampler's split
    losses = [model.loss(*model.pair_embeddings(shard), shard["labels"]) for shard in shards]
    (sum(losses) / processes).backward()
    return {n: p.grad.detach().double() for n, p in model.named_parameters() if p.grad is not None}


def difference(got: dict, reference: dict) -> tuple[float, float]:
    """The largest absolute difference over all parameters, and the difference's norm over the reference's."""
    assert got.keys() == reference.keys(), set(got) ^ set(reference)
    diff = torch.cat([(got[n] - reference[n]).flatten() for n in reference])
    norm = torch.cat([g.flatten() for g in reference.values()]).norm()
    return float(diff.abs().max()), float(diff.norm() / norm)


def compare(out: Path, overrides: list[str], pairs: int) -> None:
    one = torch.load(out / "grads_1.pt", weights_only=False)
    runs = sorted(out.glob("grads_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    local = {int(p.stem.split("_")[1]): local_losses_gradient(overrides, pairs, int(p.stem.split("_")[1]))
             for p in runs[1:]}
    print(f"device: {one['device']}; {pairs} pairs; fp32, TF32 off; reference: 1 process × {pairs}")
    print("| run | loss | max abs grad difference | relative difference (norm) |")
    print("|---|---|---|---|")
    norm = torch.cat([g.flatten() for g in one["grads"].values()]).norm()
    print(f"| 1 × {pairs} | {one['loss']:.6f} | 0 (gradient norm {norm:.4g}) | 0 |")
    for path in runs[1:]:
        run = torch.load(path, weights_only=False)
        processes = int(path.stem.split("_")[1])
        print(f"| DDP {processes} × {run['pairs_per_process']} | {run['loss']:.6f} | "
              "%.2e | %.2e |" % difference(run["grads"], one["grads"]))
        print(f"| mean of {processes} local losses (no gather) | – | "
              "%.2e | %.2e |" % difference(local[processes], one["grads"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (compare if args.compare else record)(args.out, args.overrides, args.pairs)


if __name__ == "__main__":
    main()
