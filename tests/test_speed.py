"""The fast path computes what the plain path computes: padding to fixed lengths, length buckets, CUDA graphs of
the training step, the device-side skip of a non-finite step; and results.json says which path ran."""
from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
import torch

from datamodules.buckets import LengthBuckets
from hub.callbacks import NonFiniteGuard, NonFiniteLossError
from lit_models.components import graphs
from lit_models.components.graphs import GraphedLoss
from run import build
from tests.conftest import compose_config, results_of, run_cli
from tests.test_reliability import Toy, fit
from text.padding import padded_length

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = ["backbone=scratch_tiny", "data=stsb_sample", "logger=none", "trainer.max_epochs=1"]


def test_padded_lengths_are_multiples_capped_at_max_length():
    assert [padded_length(n, 16, 64) for n in (1, 16, 17, 33, 60, 64)] == [16, 16, 32, 48, 64, 64]
    assert padded_length(70, 16, 100) == 80 and padded_length(97, 16, 100) == 100   # never past max_length
    assert padded_length(120, 16, 100) == 120                                          # nor below the longest
    assert padded_length(37, None, 64) == 37


def test_buckets_see_every_example_once_per_epoch_in_batches_of_one_bucket():
    buckets = [16, 32, 16, 48, 32, 16, 16, 64, 32, 16] * 7
    sampler = LengthBuckets(buckets, batch_size=4, seed=3)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(buckets)))
        assert all(len({buckets[i] for i in batch}) == 1 for batch in batches)
        assert sum(len(batch) < 4 for batch in batches) <= len(set(buckets))   # only a bucket's last batch
        seen.append(batches)
    assert seen[0] != seen[1]                                 # a new order each epoch
    sampler.set_epoch(1)
    assert list(sampler) == seen[1]                          # the same order for the same epoch (resume)


def test_padding_to_a_multiple_leaves_the_loss_and_gradients_unchanged(data_dir):
    """Padded positions are masked everywhere (attention, pooling), so the padded batch is the same batch."""
    losses, grads = [], []
    for multiple in (None, 16):
        cfg = compose_config(*TINY, f"paths.data_dir={data_dir}", f"speed.pad_to_multiple_of={multiple or 'null'}")
        torch.manual_seed(0)
        datamodule, model = build(cfg)
        datamodule.setup("fit")
        batch = datamodule.collate([datamodule.datasets["train"][i] for i in range(8)])
        if multiple:
            assert batch["input_ids"].shape[1] % 16 == 0
        model.eval()   # no dropout: the same function twice
        loss = model.train_loss(batch)[0]
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_speed_off_trains_eagerly_and_results_record_the_path(tmp_path, data_dir):
    quick = [*TINY, f"paths.data_dir={data_dir}", "data.train_limit=200", "data.eval_limit=100"]
    run_cli(tmp_path / "off", *quick, "speed=off")
    run_cli(tmp_path / "on", *quick, "speed.bucket_by_length=true")
    off, = results_of(tmp_path / "off")
    on, = results_of(tmp_path / "on")
    assert off["speed"] == {"path": "eager", "compiled": False, "pad_to_multiple_of": None, "bucket_by_length": False}
    padding = 16 if torch.cuda.is_available() else None   # padding to recurring shapes pays only for CUDA graphs
    assert on["speed"] == {"path": "eager", "compiled": False, "pad_to_multiple_of": padding, "bucket_by_length": True}
    assert off["choices"]["speed"] == "off" and on["choices"]["speed"] == "default"
    assert on["throughput"]["train_examples"] == off["throughput"]["train_examples"]


def test_cuda_graphs_true_without_a_gpu_fails_before_training_naming_why(tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = run_cli(tmp_path, *TINY, f"paths.data_dir={data_dir}", "speed.cuda_graphs=true", check=False)
    assert proc.returncode != 0
    assert "speed.cuda_graphs=true cannot run: training runs on cpu, not a CUDA GPU" in proc.stderr + proc.stdout
    result, = results_of(tmp_path)
    assert result["status"] == "failed" and "steps" not in result


# --- on a CUDA device -----------------------------------------------------------------------------------------

MLM_TINY = ["task=masked_lm", "loss=lm", "data=corpus", "data.packing=true", "data.max_length=48", "data.max_sentences=2000",
            "data.valid_fraction=0.004", "data.test_fraction=0.004", "backbone=scratch_tiny", "logger=none"]
STEPS = {"bi_encoder": TINY, "masked_lm": MLM_TINY}


def eager_and_fast_steps(overrides, data_dir, precision, *, graphs: bool, compiled: bool):
    """(loss, gradients) of three training batches, eager and then twice on the fast path (capture + replay,
    replay), with dropout off so that both compute one function."""
    cfg = compose_config(*overrides, f"paths.data_dir={data_dir}")
    torch.manual_seed(0)
    datamodule, model = build(cfg)
    datamodule.setup("fit")
    model.cuda().eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    batches = [{k: v.cuda() for k, v in batch.items()} for batch in list(datamodule.train_dataloader())[:3]]

    def step(loss_of, batch):
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of(batch)[0]
        loss.backward()
        return loss.detach().float(), [p.grad.float().clone() for p in model.parameters() if p.grad is not None]

    runs = [[step(model.train_loss, batch)] for batch in batches]   # eager, before anything is compiled
    if compiled:
        model.backbone.compile(dynamic=False)
    fast = GraphedLoss(model, model.train_loss) if graphs else model.train_loss
    for results, batch in zip(runs, batches):
        results += [step(fast, batch), step(fast, batch)]   # graphs: capture + replay, then replay
    return runs, fast


def assert_same_steps(runs, precision):
    tolerance = 1e-5 if precision == "32" else 2e-2
    for results in runs:
        for loss, grads in results[1:]:
            assert torch.allclose(loss, results[0][0], rtol=tolerance, atol=tolerance)
            for g, g0 in zip(grads, results[0][1]):
                assert torch.allclose(g, g0, rtol=tolerance, atol=tolerance * g0.abs().max().item())


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("task", ["bi_encoder", "masked_lm"])
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_a_graphed_step_gives_the_eager_loss_and_gradients(data_dir, task, precision):
    runs, graphed = eager_and_fast_steps(STEPS[task], data_dir, precision, graphs=True, compiled=False)
    assert_same_steps(runs, precision)
    assert graphed.failed is None and graphed.replays >= 3 and graphed.eager_steps == 0


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_a_compiled_backbone_gives_the_eager_loss_and_gradients(data_dir, graphs):
    """speed.compile=true on the masked LM's packed rows, alone and inside the CUDA graphs."""
    runs, fast = eager_and_fast_steps(MLM_TINY, data_dir, "bf16", graphs=graphs, compiled=True)
    assert_same_steps(runs, "bf16")
    if graphs:
        assert fast.failed is None and fast.eager_steps == 0


@pytest.mark.gpu
@gpu
def test_fused_adamw_drops_a_non_finite_step_on_the_device_and_the_run_stops_naming_it():
    fused = partial(torch.optim.AdamW, fused=True)
    reference = Toy([1.0, 1.0], optimizer=fused)
    fit(reference, 2, [], accelerator="gpu")
    model = Toy([1.0, 1.0, float("nan"), 1.0, 1.0], optimizer=fused)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2 \(epoch 0, batch 2\)"):
        fit(model, 5, [NonFiniteGuard()], accelerator="gpu")
    assert torch.equal(model.w.cpu(), reference.w.cpu())   # the NaN step changed nothing; nothing ran after it


@pytest.mark.gpu
@gpu
def test_skip_on_the_device_counts_the_skipped_steps():
    fused = partial(torch.optim.AdamW, fused=True)
    reference = Toy([1.0, 1.0], optimizer=fused)
    fit(reference, 2, [], accelerator="gpu")
    model = Toy([1.0, float("nan"), 1.0], optimizer=fused)
    guard = NonFiniteGuard(action="skip")
    fit(model, 3, [guard], accelerator="gpu")
    assert guard.skipped == 1
    assert torch.equal(model.w.cpu(), reference.w.cpu())   # two real steps, as the reference's two


def test_results_count_every_replayed_and_eager_step():
    counts = Counter()
    graphed = GraphedLoss(torch.nn.Linear(1, 1), lambda batch: (counts.update(["eager"]) or torch.zeros(()), 1))
    graphed({"texts": ["not a tensor"]})   # a field no graph can take: eager, and counted
    assert graphed.summary() == {"graphs": 0, "replays": 0, "eager_steps": 1, "capture_failed": None,
                                 "memory_full": False}
    assert counts["eager"] == 1


class FakeGraphs:
    """GraphedLoss's CUDA side replaced on the CPU: a batch's signature is its "shape" field, a capture takes
    `per_graph` bytes of a device of `total` bytes (or fails at capture number `fail_at`), a replay is counted."""

    def __init__(self, monkeypatch, total=100, per_graph=20, fail_at=None):
        self.free, self.total, self.per_graph, self.fail_at, self.captures, self.emptied = total, total, per_graph, \
            fail_at, 0, 0
        fake = self

        class Graph:
            size = 1

            def __init__(self, *args):
                fake.captures += 1
                if fake.captures == fail_at:
                    raise torch.OutOfMemoryError("CUDA out of memory")
                fake.free -= per_graph
                self.loss = torch.zeros(())

            def load(self, batch):
                pass

        def empty_cache():
            fake.emptied += 1
            fake.free = fake.total

        monkeypatch.setattr(graphs, "signature", lambda batch: (("shape", (batch["shape"],), torch.int64),))
        monkeypatch.setattr(graphs, "StepGraph", Graph)
        monkeypatch.setattr(graphs.Replay, "apply", staticmethod(lambda anchor, graph: graph.loss))
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (fake.free, fake.total))
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
        monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)


def test_new_batch_shapes_run_eagerly_once_graphs_leave_too_little_memory_free(monkeypatch):
    fake = FakeGraphs(monkeypatch, total=100, per_graph=20)   # 80, 60, 40, 20 free after 1-4 graphs
    counts = Counter()
    graphed = GraphedLoss(torch.nn.Linear(1, 1), lambda batch: (counts.update(["eager"]) or torch.zeros(()), 1),
                          min_free=0.25)
    for shape in [1, 2, 3, 4, 5, 1, 4, 6]:
        graphed({"shape": shape})
    # shapes 1-4 recorded (20 free after the 4th < 25 % of 100); 5 and 6 eager; 1 and 4 replayed
    assert fake.captures == 4 and counts["eager"] == 2
    assert graphed.summary() == {"graphs": 4, "replays": 6, "eager_steps": 2, "capture_failed": None,
                                 "memory_full": True}


def test_a_failed_capture_releases_the_recorded_graphs_and_training_goes_on_eagerly(monkeypatch):
    fake = FakeGraphs(monkeypatch, total=100, per_graph=20, fail_at=3)
    counts = Counter()
    graphed = GraphedLoss(torch.nn.Linear(1, 1), lambda batch: (counts.update(["eager"]) or torch.zeros(()), 1))
    for shape in [1, 2, 3, 1, 2]:
        graphed({"shape": shape})
    assert fake.emptied == 1 and fake.free == 100   # the two recorded graphs' memory handed back
    summary = graphed.summary()
    assert summary["graphs"] == 0 and summary["replays"] == 2 and summary["eager_steps"] == 3   # 1, 2 replayed once
    assert summary["capture_failed"].startswith("OutOfMemoryError") and counts["eager"] == 3


# --- packed rows ----------------------------------------------------------------------------------------------

SENTENCES = [[101, 2769, 4263, 102], [101, 1266, 776, 1922, 3307, 102], [101, 872, 102]]


def encoder_with(attention: str, position: str):
    from hydra.utils import instantiate

    from lit_models.components.backbones import ScratchBackbone

    torch.manual_seed(0)
    mixer = instantiate(compose_config(f"attention={attention}").attention)
    return ScratchBackbone(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, dropout=0.0, max_position=64,
                           position=position, attention=mixer).eval()


def packed_and_alone(backbone, sentences):
    """The last hidden states of each sentence: packed into one row, and each alone in a padded row."""
    from datamodules.corpus import pack

    row, = pack(sentences, max_length=64)
    ids, segments = torch.tensor([row["input_ids"]]), torch.tensor([row["segment_ids"]])
    packed = backbone(ids, torch.ones_like(ids), segment_ids=segments)[-1][0]
    starts = [0, *torch.tensor([len(s) for s in sentences]).cumsum(0).tolist()]
    packed = [packed[a:b] for a, b in zip(starts, starts[1:])]
    length = max(map(len, sentences)) + 3
    alone = []
    for sentence in sentences:
        ids = torch.tensor([sentence + [0] * (length - len(sentence))])
        alone.append(backbone(ids, (ids > 0).long())[-1][0, :len(sentence)])
    return packed, alone


@pytest.mark.parametrize("attention, position", [("softmax", "learned"), ("softmax", "sinusoidal"),
                                                 ("softmax", "rope"), ("softmax_logn", "learned"),
                                                 ("local", "learned"), ("gau", "rope")])
def test_a_packed_sentence_is_encoded_as_if_alone_and_its_neighbours_do_not_leak(attention, position):
    backbone = encoder_with(attention, position)
    with torch.no_grad():
        packed, alone = packed_and_alone(backbone, SENTENCES)
        for p, a in zip(packed, alone):
            assert torch.allclose(p, a, atol=1e-5)
        changed = [SENTENCES[0], [101, 3300, 3300, 3300, 3300, 102], SENTENCES[2]]   # a new middle neighbour
        packed_again, _ = packed_and_alone(backbone, changed)
    assert torch.equal(packed_again[0], packed[0]) and torch.allclose(packed_again[2], packed[2], atol=1e-6)
    assert not torch.allclose(packed_again[1], packed[1], atol=1e-3)


def test_positions_restart_with_each_packed_sentence():
    from lit_models.components.nn.transformer import restarting

    segments = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert restarting(segments).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], list(range(8))]
    assert restarting(torch.tensor([[1, 1, 0, 0]])).tolist() == [[0, 1, 2, 3]]   # unpacked: 0, 1, 2, …


def test_packing_keeps_every_sentence_whole_and_in_order():
    from datamodules.corpus import pack

    rows = pack([[1] * 5, [2] * 4, [3] * 3, [4] * 6, [5] * 2], max_length=10)
    assert [r["input_ids"] for r in rows] == [[1] * 5 + [2] * 4, [3] * 3 + [4] * 6, [5] * 2]
    assert rows[0]["segment_ids"] == [1] * 5 + [2] * 4 and rows[2]["segment_ids"] == [1, 1]


def test_packing_is_refused_with_linear_attention_naming_what_works():
    from hub.config import ConfigError, check_config

    cfg = compose_config("task=masked_lm", "loss=lm", "data=corpus", "attention=linear", "data.packing=true")
    with pytest.raises(ConfigError, match=r"data.packing=true does not work with attention=linear.*"
                                          r"attention=gau\|local\|softmax\|softmax_logn or data.packing=false"):
        check_config(cfg, {"attention": "linear"})


def test_masked_positions_give_the_loss_of_boolean_indexing():
    """The gather at fixed-shape positions computes the loss that hidden[labels != -100] computes."""
    from datamodules.corpus import masked_positions

    torch.manual_seed(0)
    labels = torch.full((4, 12), -100)
    for row, cols in enumerate([[1, 5], [2], [0, 3, 7, 9, 11], []]):
        labels[row, cols] = torch.randint(0, 50, (len(cols),))
    hidden, head = torch.randn(4, 12, 16), torch.nn.Linear(16, 50)
    positions, targets = masked_positions(labels, multiple_of=4)
    assert positions.shape == targets.shape == (8,)   # 8 predicted tokens: two slots of 4, none unused
    positions, targets = masked_positions(labels)
    assert positions.shape == (64,) and (targets != -100).sum() == 8
    loss = torch.nn.functional.cross_entropy(head(hidden.flatten(0, 1)[positions]), targets)
    reference = torch.nn.functional.cross_entropy(head(hidden[labels != -100]), labels[labels != -100])
    assert torch.allclose(loss, reference, atol=1e-6)
