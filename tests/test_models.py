import math
import socket
import time
from dataclasses import asdict
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from lit_models.bi_encoder import BiEncoder
from lit_models.components import backbones
from lit_models.components.backbones import (
    PretrainedBackbone,
    ScratchBackbone,
    reachable,
    resolve_pretrained,
)
from lit_models.components.init import bert, initialize, xavier
from lit_models.components.losses import CoSENTLoss, SBERTLoss
from lit_models.components.nn.attention import LocalAttention, MultiHeadAttention
from lit_models.components.pooling import pool
from lit_models.components.schedules import constant, linear_warmup
from tests.conftest import CONF_DIR, compose_config
from tests.test_nn import MeanMixer
from text.info import DataInfo


def test_poolings_against_explicit_loops():
    torch.manual_seed(0)
    hidden = [torch.randn(2, 5, 3) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[-1][:, 0])
    mean = torch.stack([hidden[-1][0, :3].mean(0), hidden[-1][1].mean(0)])
    assert torch.allclose(pool(hidden, mask, "mean"), mean)
    avg = (hidden[1] + hidden[-1]) / 2
    first_last = torch.stack([avg[0, :3].mean(0), avg[1].mean(0)])
    assert torch.allclose(pool(hidden, mask, "first_last_avg"), first_last)
    with pytest.raises(ValueError, match="pooling"):
        pool(hidden, mask, "max")


@pytest.fixture(scope="module")
def scratch():
    torch.manual_seed(0)
    backbone = ScratchBackbone(hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, dropout=0.0)
    initialize(backbone, bert)
    return backbone.eval()


def test_scratch_tokenizer_is_the_bert_base_chinese_vocab(scratch):
    tok = scratch.tokenizer
    assert len(tok) == 21128 and tok.pad_token_id == 0 and tok.cls_token_id == 101 and tok.sep_token_id == 102
    assert tok("一架飞机")["input_ids"] == [101, 671, 3373, 7607, 3322, 102]


def test_padding_does_not_change_a_sentences_hidden_states(scratch):
    alone = scratch.tokenizer(["今天天气很好"], return_tensors="pt")
    batch = scratch.tokenizer(["今天天气很好", "我喜欢在公园里散步和看书"], padding=True, return_tensors="pt")
    h_alone = scratch(alone["input_ids"], alone["attention_mask"])[-1][0]
    h_batch = scratch(batch["input_ids"], batch["attention_mask"])[-1][0, :h_alone.shape[0]]
    assert torch.allclose(h_alone, h_batch, atol=1e-5)


@pytest.mark.parametrize("choice", sorted(p.stem for p in (CONF_DIR / "attention").glob("*.yaml")))
def test_every_attention_yaml_builds_the_scratch_backbone_as_run_py_does(choice):
    cfg = compose_config(f"attention={choice}", "backbone.hidden_size=16", "backbone.num_heads=2")
    backbone = instantiate(cfg.backbone, attention=instantiate(cfg.attention))
    options = {k: v for k, v in cfg.attention.items() if k != "_partial_"}
    assert backbone.encoder.cfg.attention == options
    assert type(backbone.encoder.blocks[0].sublayers[0]).__name__ == cfg.attention._target_.rpartition(".")[2]


def test_a_new_attention_class_passed_as_a_partial_builds_a_working_backbone():
    backbone = instantiate(compose_config().backbone, attention=partial(MeanMixer, scale=0.5), dropout=0.0).eval()
    assert isinstance(backbone.encoder.blocks[0].sublayers[0], MeanMixer)
    alone = backbone.tokenizer(["今天天气很好"], return_tensors="pt")
    batch = backbone.tokenizer(["今天天气很好", "我喜欢在公园里散步"], padding=True, return_tensors="pt")
    h_alone = backbone(alone["input_ids"], alone["attention_mask"])[-1][0]
    h_batch = backbone(batch["input_ids"], batch["attention_mask"])[-1][0, :h_alone.shape[0]]
    assert torch.allclose(h_alone, h_batch, atol=1e-5)


def test_a_checkpoint_brings_its_attention_and_refuses_another(tmp_path):
    sizes = dict(hidden_size=16, num_layers=1, num_heads=2, ffn_size=32)
    pretrained = ScratchBackbone(attention=partial(LocalAttention, window=3), **sizes)
    path = tmp_path / "backbone.pt"
    torch.save({"encoder": pretrained.encoder.state_dict(), "config": asdict(pretrained.encoder.cfg)}, path)
    loaded = ScratchBackbone(checkpoint=str(path), **sizes)                  # attention left out: the file's
    assert loaded.encoder.cfg.attention == pretrained.encoder.cfg.attention and not loaded.from_scratch
    assert loaded.encoder.blocks[0].sublayers[0].window == 3
    with pytest.raises(ValueError, match="pretrained with attention .*LocalAttention"):
        ScratchBackbone(checkpoint=str(path), attention=MultiHeadAttention, **sizes)
    old = {"encoder": pretrained.encoder.state_dict(), "config": {**asdict(pretrained.encoder.cfg), "attention": {
        "kind": "local", "window": 3, "train_length": 512, "key_size": 128, "expansion": 2, "normalization": "relu2"}}}
    torch.save(old, path)                                                     # a file from before `_target_`
    assert ScratchBackbone(checkpoint=str(path), **sizes).encoder.cfg.attention == pretrained.encoder.cfg.attention


def test_init_schemes_have_their_formula_std():
    big = nn.Linear(1024, 512)
    initialize(big, bert)
    # N(0, 0.02²) truncated at ±2σ has std 0.02·0.8796
    assert big.weight.std().item() == pytest.approx(0.02 * 0.8796, rel=0.05)
    assert big.weight.abs().max().item() <= 0.04 and big.bias.abs().max().item() == 0
    initialize(big, xavier)
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / (1024 + 512)), rel=0.05)
    norm = nn.LayerNorm(8)
    nn.init.normal_(norm.weight)
    initialize(norm, bert)
    assert torch.equal(norm.weight, torch.ones(8))


def test_task_initializes_new_heads_and_scratch_backbones_only(scratch):
    def bi_encoder(backbone, loss):
        return BiEncoder(backbone=backbone, loss=loss, optimizer=torch.optim.AdamW, scheduler=constant,
                         init=xavier, monitor="val/spearman", data=DataInfo("test"))
    head = SBERTLoss(hidden_size=32)
    nn.init.constant_(head.classifier.weight, 1.0)
    bi_encoder(scratch, head)
    assert head.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / (96 + 2)), rel=0.2)
    assert scratch.encoder.blocks[0].sublayers[1].up.weight.std().item() == pytest.approx(math.sqrt(2 / (32 + 64)), rel=0.1)


def test_biases_and_norms_get_no_weight_decay(scratch):
    model = BiEncoder(backbone=scratch, loss=CoSENTLoss(), optimizer=torch.optim.AdamW, scheduler=constant,
                      init=bert, monitor="val/spearman", data=DataInfo("test"))
    decayed, tables, biases, gains = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decayed["params"]) and "weight_decay" not in decayed
    assert tables["embedding"] and "weight_decay" not in tables and sorted(names[id(p)] for p in tables["params"]) == sorted(
        n + ".weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding))
    assert biases["weight_decay"] == 0.0 and all(names[id(p)].endswith(".bias") for p in biases["params"])
    assert gains["weight_decay"] == 0.0 and gains["norm_gain"]
    assert sorted(names[id(p)] for p in gains["params"]) == sorted(
        n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) for n in [n + ".weight"])
    assert sum(len(g["params"]) for g in (decayed, tables, biases, gains)) == len(list(model.parameters()))


def test_head_lr_scale_multiplies_the_lr_of_the_new_head_only_and_the_schedule_keeps_it(scratch):
    from functools import partial

    from lit_models.classifier import Classifier

    model = Classifier(backbone=scratch, loss=nn.CrossEntropyLoss(), data=DataInfo("test", num_labels=3), init=bert,
                       head_lr_scale=20.0,
                       optimizer=partial(torch.optim.AdamW, lr=1e-3), monitor="val/accuracy",
                       scheduler=partial(linear_warmup, warmup_ratio=0.5))
    model.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    head = {id(p) for p in model.head.parameters()}
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all backbone
        assert group["lr"] == 0.0                                           # warmup step 0: 0/5
    optimizer.step()
    scheduler.step()
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert group["lr"] == pytest.approx((20e-3 if in_head.pop() else 1e-3) * 0.2)  # warmup step 1: 1/5
    assert sorted(set(scheduler.base_lrs)) == pytest.approx([1e-3, 20e-3])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="head_lr_scale must be > 0"):
        Classifier(backbone=scratch, loss=nn.CrossEntropyLoss(), data=DataInfo("test", num_labels=3), init=bert,
                   head_lr_scale=0,
                   optimizer=torch.optim.AdamW, scheduler=constant, monitor="val/accuracy")


def test_linear_warmup_schedule_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup(opt, num_training_steps=100, warmup_ratio=0.1)
    factors = [sched.lr_lambdas[0](step) for step in (0, 4, 9, 10, 55, 100)]
    assert factors == pytest.approx([0.0, 0.4, 0.9, 1.0, 0.5, 0.0])


def test_pretrained_falls_back_to_the_local_folder_without_network(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    local = tmp_path / "local-model"
    local.mkdir()
    assert resolve_pretrained("some-org/some-model", str(local)) == str(local)
    assert "not reachable" in caplog.text and str(local) in caplog.text
    with pytest.raises(FileNotFoundError, match="backbone.local_dir=.*missing"):
        resolve_pretrained("some-org/some-model", str(tmp_path / "missing"))


def test_reachable_answers_within_its_timeout(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert reachable("127.0.0.1", port, timeout=2.0)
    assert not reachable("127.0.0.1", port, timeout=2.0)                    # closed: refused at once
    def hang(*args, **kwargs):                                              # a name lookup that hangs
        time.sleep(2)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert not reachable("huggingface.co", timeout=0.2)
    assert time.monotonic() - start < 1.0


def test_hf_hub_offline_skips_the_probe(monkeypatch):
    monkeypatch.setattr(backbones, "reachable", lambda *a, **k: pytest.fail("probed the network"))
    for value in ("1", "true", "ON"):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert not backbones.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    monkeypatch.setattr(backbones, "reachable", lambda host, port, timeout: (host, port) == ("hf-mirror.com", 443))
    assert backbones.hub_reachable()


def test_pretrained_backbone_loads_e5_with_its_prefix(e5_dir):
    backbone = PretrainedBackbone(str(e5_dir), text_prefix="query: ")
    assert backbone.hidden_size == 384 and backbone.model.pooler is None
    assert all(module.training for module in backbone.modules())     # dropout on while fine-tuning
    batch = backbone.tokenizer(["query: 今天天气很好"], return_tensors="pt")
    hidden = backbone(batch["input_ids"], batch["attention_mask"])
    assert len(hidden) == 13 and hidden[-1].shape == (1, batch["input_ids"].shape[1], 384)
