"""task=cross_encoder (kexue.fm/archives/9341): joint pair encoding, score losses, the valid-chosen threshold
(kexue.fm/archives/8860) and a short training run through the CLI."""
import csv
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_object, instantiate

from datamodules.sts import JointPairs, TokenizedPairs
from lit_models.components.backbones import ScratchBackbone
from lit_models.components.init import bert
from lit_models.components.losses import CoSENTLoss, CrossEntropyLoss
from lit_models.components.schedules import constant
from lit_models.components.threshold import best_threshold
from lit_models.cross_encoder import CrossEncoder
from run import build_backbone
from tests.conftest import compose_config, results_of, run_cli
from text.info import DataInfo

# Measured: test Spearman 0.186 after 3 epochs on stsb_sample (seed 1, scratch_tiny, loss=cosent); floor = that − 0.10.
TEST_SPEARMAN_FLOOR = 0.086
ONE_THREAD = {"OMP_NUM_THREADS": "1"}   # same numbers; two threads contending for 2 busy cores run ~5× slower


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, dropout=0.0)


def cross_encoder(backbone, loss, **options) -> CrossEncoder:
    return CrossEncoder(backbone=backbone, loss=loss, optimizer=torch.optim.AdamW, scheduler=constant, init=bert,
                        monitor="val/spearman", data=DataInfo("test"), **options)


def sts_datamodule(*overrides, tokenizer=None, prefix=""):
    """An STS DataModule as run.py sets it up for task=cross_encoder: pairs encoded jointly (PAIR_ENCODING)."""
    dm = instantiate(compose_config("task=cross_encoder", *overrides).data)
    if tokenizer is not None:
        dm.set_tokenizer(tokenizer, prefix, pair_encoding=CrossEncoder.PAIR_ENCODING)
    return dm


def cosent_double_loop(scores: list[float], labels: list[float]) -> float:
    """log(1 + Σ_{y_i < y_j} exp(s_i − s_j)), written out."""
    total = 1.0
    for s_i, y_i in zip(scores, labels):
        for s_j, y_j in zip(scores, labels):
            if y_i < y_j:
                total += math.exp(s_i - s_j)
    return math.log(total)


def test_cross_encoder_cosent_on_its_scores_equals_the_double_loop(backbone):
    model = cross_encoder(backbone, CoSENTLoss()).eval()
    dm = sts_datamodule("data=stsb_sample", "data.cache_dir=null", "data.batch_size=16", tokenizer=backbone.tokenizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step(batch, 0)
    expected = cosent_double_loop(model(batch).tolist(), batch["labels"].tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("labels", [torch.tensor([0., 5, 3, 3, 1, 4, 2, 5, 0, 2.4, 2.6, 4.8]),
                                    torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0])])   # CLUE: long 0/1
def test_cosent_of_raw_scores_equals_the_double_loop(labels):
    scores = torch.randn(len(labels), generator=torch.Generator().manual_seed(1)) * 3
    assert CoSENTLoss()(scores, labels).item() == pytest.approx(cosent_double_loop(scores.tolist(), labels.tolist()),
                                                                rel=1e-6)


@pytest.mark.parametrize("labels", [torch.tensor([0., 5, 3, 2.5, 2.6, 1, 4.2]) / 5,   # STS-B as the data gives it
                                    torch.tensor([0, 1, 1, 0, 1, 0, 1])])
def test_cross_entropy_on_one_score_equals_binary_cross_entropy_with_logits(labels):
    scores = torch.tensor([-2.0, 0.5, 3.0, 1.0, -0.3, 0.0, 7.0])
    binary = (labels > 0.5).float()                               # STS-B: 2.5 of 5 is not similar, 2.6 is
    expected = F.binary_cross_entropy_with_logits(scores, binary)
    assert CrossEntropyLoss()(scores, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def brute_force_threshold(scores: list[float], labels: list[bool]) -> tuple[float, float]:
    """Accuracy of `score > t` at every cut, the lowest of the best."""
    values = sorted(set(scores))
    cuts = [-math.inf] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [math.inf]
    accuracies = [sum((s > t) == y for s, y in zip(scores, labels)) / len(scores) for t in cuts]
    best = accuracies.index(max(accuracies))
    return cuts[best], accuracies[best]


def test_best_threshold_by_hand():
    # cuts between 0.1|0.35 and 0.4|0.8 both get 3 of 4 right; the lower one wins
    assert best_threshold(torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float64),
                          torch.tensor([0, 0, 1, 1])) == (pytest.approx(0.225), 0.75)
    assert best_threshold(torch.tensor([0.3, 0.1]), torch.tensor([1, 1])) == (-math.inf, 1.0)
    assert best_threshold(torch.tensor([0.3, 0.1]), torch.tensor([0, 0])) == (math.inf, 1.0)
    with pytest.raises(ValueError, match="as many labels as scores"):
        best_threshold(torch.tensor([0.3, 0.1]), torch.tensor([1]))


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_best_threshold_equals_brute_force_and_no_cut_beats_it(kind):
    generator = torch.Generator().manual_seed(7)
    for _ in range(10):
        if kind == "continuous":
            scores = torch.randn(150, generator=generator, dtype=torch.float64)
        else:
            scores = torch.randint(0, 6, (150,), generator=generator).double()   # many equal scores
        labels = scores + torch.randn(150, generator=generator, dtype=torch.float64) * 1.5 > 0.5
        threshold, accuracy = best_threshold(scores, labels)
        assert (threshold, accuracy) == brute_force_threshold(scores.tolist(), labels.tolist())
        assert ((scores > threshold) == labels).double().mean().item() == accuracy
        grid = torch.linspace(scores.min().item() - 1, scores.max().item() + 1, 2001, dtype=torch.float64)
        grid_accuracy = ((scores[None] > grid[:, None]) == labels[None]).double().mean(1)
        assert grid_accuracy.max().item() <= accuracy


def test_joint_encoding_of_a_real_stsb_pair(data_dir, backbone):
    tokenizer = backbone.tokenizer
    dm = sts_datamodule("data=stsb", f"paths.data_dir={data_dir}", "data.cache_dir=null", "data.batch_size=3",
                        "data.eval_batch_size=3", tokenizer=tokenizer)
    assert dm.pair_encoding == "joint"
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "index"}
    # line 2 of STS-B.valid.data: 一个小孩在骑马。<TAB>孩子在骑马。<TAB>4
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][1][batch["attention_mask"][1] == 1].tolist())
    assert tokens == ["[CLS]", *"一个小孩在骑马。", "[SEP]", *"孩子在骑马。", "[SEP]"]
    assert batch["token_type_ids"][1, :17].tolist() == [0] * 10 + [1] * 7
    assert batch["input_ids"].shape[1] == 2 * 14 + 3     # line 1: the same 14-character sentence twice
    assert batch["input_ids"][1, 17:].eq(tokenizer.pad_token_id).all() and batch["attention_mask"][1, 17:].eq(0).all()
    assert batch["labels"].tolist() == pytest.approx([1.0, 0.8, 0.4]) and batch["labels"].dtype == torch.float32
    assert batch["index"].tolist() == [0, 1, 2]


def test_joint_truncates_the_longer_side_and_prefixes_the_first(backbone):
    tokenizer = backbone.tokenizer
    dm = sts_datamodule("data=stsb_sample", "data.cache_dir=null", "data.max_length=9", tokenizer=tokenizer,
                        prefix="前缀")
    pairs, data = dm.read_split("valid"), dm.dataset("valid")
    for i in range(20):
        ids, types = data.input_ids[i], data.token_type_ids[i]
        first, second = len(types) - sum(types) - 2, sum(types) - 1
        full_first, full_second = len("前缀" + pairs.first[i]), len(pairs.second[i])
        assert len(ids) == min(9, full_first + full_second + 3)
        assert min(full_first, 3) <= first and min(full_second, 3) <= second   # longest first: both sides kept
        assert tokenizer.convert_ids_to_tokens(ids[1:3]) == ["前", "缀"]


def test_joint_encoding_with_the_e5_tokenizer_prefixes_the_first_sentence_only(e5_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    dm = sts_datamodule("data=stsb_sample", "data.cache_dir=null", "data.batch_size=3", tokenizer=tokenizer,
                        prefix="query: ")
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert "token_type_ids" not in batch          # an XLM-R tokenizer gives none: the model's default, all 0
    # line 2 of the sample's valid file: 小狗在玩塑料容器。<TAB>狗在玩一个塑料容器。<TAB>3
    ids = batch["input_ids"][1][batch["attention_mask"][1] == 1].tolist()
    text = tokenizer.decode(ids)
    assert text.startswith("<s> query: 小狗在玩塑料容器。</s></s>") and text.endswith("</s>")
    assert text.count("query:") == 1 and "狗在玩一个塑料容器。" in text.split("</s></s>")[1]


def test_cache_key_includes_the_encoding(tmp_path, backbone):
    joint = sts_datamodule("data=stsb_sample", f"data.cache_dir={tmp_path}", tokenizer=backbone.tokenizer)
    separate = instantiate(compose_config("task=bi_encoder", "data=stsb_sample", f"data.cache_dir={tmp_path}").data)
    separate.set_tokenizer(backbone.tokenizer)
    assert (joint.pair_encoding, separate.pair_encoding) == ("joint", "separate")
    assert isinstance(joint.dataset("test"), JointPairs) and isinstance(separate.dataset("test"), TokenizedPairs)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    again = sts_datamodule("data=stsb_sample", f"data.cache_dir={tmp_path}", tokenizer=backbone.tokenizer)
    assert again.dataset("test").input_ids == joint.dataset("test").input_ids
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_bi_encoder_batches_and_inputs_are_unchanged(backbone):
    cfg = compose_config("task=bi_encoder", "data=stsb_sample", "data.cache_dir=null", "data.batch_size=4",
                         "data.eval_batch_size=4")
    dm = instantiate(cfg.data)
    dm.set_tokenizer(backbone.tokenizer)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].shape[0] == 8
    assert dm.info == DataInfo("stsb_sample")


def test_experiment_pins_the_posts_setup():
    cfg = compose_config("experiment=cosent_interactive", "data=stsb", "loss=cross_entropy")
    assert cfg.task._target_ == "lit_models.cross_encoder.CrossEncoder"
    assert (cfg.data.batch_size, cfg.data.max_length, cfg.optimizer.lr, cfg.trainer.max_epochs) == (64, 128, 2e-5, 5)
    assert cfg.scheduler._target_ == "lit_models.components.schedules.constant" and cfg.optimizer.weight_decay == 0
    assert (cfg.task.dropout, cfg.task.monitor) == (0.0, "val/accuracy")


def test_bad_options_are_refused(backbone):
    from hub.config import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"loss=sbert does not work with task=cross_encoder: task=cross_encoder "
                                          r"takes loss=cosent\|cross_entropy$"):
        check_config(compose_config("task=cross_encoder", "data=stsb_sample", "loss=sbert"))
    with pytest.raises(ValueError, match="pair_encoding must be one of"):
        sts_datamodule().set_tokenizer(backbone.tokenizer, pair_encoding="pairs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cross_encoder")
    overrides = ["task=cross_encoder", "data=stsb_sample", "backbone=scratch_tiny", "loss=cosent", "trainer=cpu",
                 "logger=csv", "trainer.max_epochs=3", "seed=1"]
    run_cli(tmp_path, *overrides, env=ONE_THREAD)
    [results] = results_of(tmp_path)
    return tmp_path, overrides, results


def test_short_training_run_beats_the_floor_and_reports_accuracy(trained):
    _, _, results = trained
    assert results["status"] == "completed" and results["best"]["metric"] == "val/spearman"
    assert results["test"]["test/spearman"] > TEST_SPEARMAN_FLOOR
    assert 0.5 <= results["test"]["test/accuracy"] <= 1


def test_the_threshold_of_the_best_checkpoint_is_the_one_test_uses(trained, tmp_path):
    folder, overrides, results = trained
    cfg = compose_config(*overrides, "data.cache_dir=null")
    backbone = build_backbone(cfg, get_object(cfg.backbone._target_))
    model = CrossEncoder.load_from_checkpoint(
        results["best"]["path"], map_location="cpu", backbone=backbone, loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler), init=instantiate(cfg.init)).eval()
    threshold = model.threshold.item()
    rows = list(csv.DictReader(open(next((folder / "outputs").rglob("metrics.csv")))))
    logged = {int(r["epoch"]): float(r["val/threshold"]) for r in rows if r.get("val/threshold")}
    assert logged[results["best"]["epoch"]] == pytest.approx(threshold, rel=1e-6)

    dm = instantiate(cfg.data)
    dm.set_tokenizer(backbone.tokenizer, pair_encoding=CrossEncoder.PAIR_ENCODING)

    def scores_and_labels(split):
        with torch.no_grad():
            batches = [(model(batch), batch["labels"]) for batch in dm.loader(split)]
        return torch.cat([s for s, _ in batches]).double(), torch.cat([y for _, y in batches])

    valid_scores, valid_labels = scores_and_labels("valid")     # chosen on valid with the checkpoint's weights
    assert best_threshold(valid_scores, valid_labels > 0.5)[0] == pytest.approx(threshold, rel=1e-9, abs=1e-12)
    test_scores, test_labels = scores_and_labels("test")
    accuracy = ((test_scores > threshold) == (test_labels > 0.5)).double().mean().item()
    assert results["test"]["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow
def test_cross_entropy_baseline_trains_through_the_cli(tmp_path):
    run_cli(tmp_path, "task=cross_encoder", "data=stsb_sample", "backbone=scratch_tiny", "loss=cross_entropy",
            "trainer=cpu", "logger=csv", "trainer.max_epochs=3", "seed=1", env=ONE_THREAD)
    [results] = results_of(tmp_path)
    assert results["test"]["test/spearman"] > 0.068   # measured 0.168 (seed 1), minus 0.10
    assert set(results["test"]) == {"test/spearman", "test/accuracy"}
