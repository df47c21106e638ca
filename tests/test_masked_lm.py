"""task=masked_lm on data=corpus: BERT's masking, the corpus split, the tied MLM head, pretrain → fine-tune."""
import csv
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_object, instantiate

import datamodules.corpus as corpus
from datamodules.corpus import (CorpusDataModule, choose_tokens, choose_words, dedup_key, mask_tokens,
                               masked_positions, word_ids_of)
from hub.config import PROJECT_ROOT
from lit_models.components.backbones import ScratchBackbone
from lit_models.components.init import bert, xavier
from lit_models.components.losses import TokenCrossEntropy
from lit_models.components.schedules import constant
from lit_models.masked_lm import MaskedLM
from run import build_backbone
from tests.conftest import compose_config, results_of, run_cli
from text.files import DataFormatError, MissingSplitError, find_file
from text.info import DataInfo
from text.padding import pad_batch

SAMPLE_DIR = PROJECT_ROOT / "datamodules" / "samples" / "stsb_sample"
# The corpus of the pretraining tests: the default sources and exclusions, ≈ 850 valid and test sentences each
# (not the default 1%), sentences cut at 48 tokens (the default is 128).
CORPUS = ("data=corpus", "data.valid_fraction=0.004", "data.test_fraction=0.004", "data.max_length=48")
# Its split sizes, from the data folder of SOURCES.md: 541,439 texts, 255,572 distinct, 34,189 of them in an
# evaluation file; with the default fractions (0.01) they are 216,986 / 2,223 / 2,174.
CORPUS_SIZES = {"train": 219675, "valid": 848, "test": 860}


@pytest.fixture(scope="module")
def tokenizer():
    return ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64).tokenizer


def sample_corpus(tokenizer, **options) -> CorpusDataModule:
    """The 1,168 distinct sentences of the shipped STS-B sample as a corpus (no data folder needed)."""
    dm = CorpusDataModule(name="sample", root=str(SAMPLE_DIR), sources=[
        {"file": "STS-B.train.data", "format": "tsv", "fields": [0, 1]}], **options)
    dm.set_tokenizer(tokenizer)
    return dm


def test_masking_selects_15_percent_of_ordinary_tokens_split_80_10_10(tokenizer):
    dm = sample_corpus(tokenizer, valid_fraction=0.0, test_fraction=0.0)
    rows = dm.dataset("train")               # no valid split (valid_fraction=0): train only, not setup("fit")
    padded = pad_batch(rows, {"input_ids": tokenizer.pad_token_id})
    original, attention_mask = padded["input_ids"], padded["attention_mask"]
    torch.manual_seed(0)
    batch = dm.collate(rows)
    ids, labels = batch["input_ids"], batch["labels"]
    assert torch.equal(batch["attention_mask"], attention_mask)

    predicted = labels != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not (predicted & special).any() and not predicted[attention_mask == 0].any()
    assert (original[:, 0] == tokenizer.cls_token_id).all() and not predicted[:, 0].any()
    assert torch.equal(labels[predicted], original[predicted])        # labels: the original ids, -100 elsewhere
    assert torch.equal(ids[~predicted], original[~predicted])          # nothing else changes
    n = (attention_mask.bool() & ~special).sum(1)
    assert predicted.sum(1).tolist() == [max(1, round(0.15 * k)) for k in n.tolist()]   # BERT's per-row count
    assert predicted.sum().item() / n.sum().item() == pytest.approx(0.15, abs=0.01)

    total = predicted.sum().item()                                     # 3,309 predicted tokens
    masked = (ids == tokenizer.mask_token_id) & predicted
    kept = (ids == original) & predicted
    replaced = predicted & ~masked & ~kept
    assert masked.sum().item() / total == pytest.approx(0.8, abs=0.03)
    assert replaced.sum().item() / total == pytest.approx(0.1, abs=0.025)
    assert kept.sum().item() / total == pytest.approx(0.1, abs=0.025)
    assert not torch.isin(ids[replaced], torch.tensor(tokenizer.all_special_ids)).any()

    again = dm.collate(rows)                                           # dynamic: new masks every batch
    assert not torch.equal(again["labels"], labels)
    torch.manual_seed(0)
    assert torch.equal(dm.collate(rows)["labels"], labels)             # ... from the seeded generator


def test_validation_masks_are_drawn_once_with_the_eval_seed(tokenizer):
    first, second = (sample_corpus(tokenizer, valid_fraction=0.3, test_fraction=0.0) for _ in range(2))
    torch.manual_seed(0)
    first.setup("validate")
    torch.manual_seed(1)
    second.setup("validate")
    assert len(first.datasets["valid"]) > 300 and first.datasets["valid"] == second.datasets["valid"]
    batch = first.collate(first.datasets["valid"][:8])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert ((batch["labels"] != -100).sum(1) >= 1).all()


def test_whole_words_follow_the_segmentation(tokenizer):
    tokens = ["[CLS]", "我", "爱", "北", "京", "天", "安", "门", "hello", "world", "u", "##na", "##ff", "##able", "[SEP]"]
    seen = []

    def segment(text):
        seen.append(text)
        return ["我", "爱", "北京", "天安门", "hello", " ", "world", " ", "unaffable"]

    ids = word_ids_of(tokens, segment, set(tokenizer.all_special_tokens))
    assert seen == ["我爱北京天安门hello world unaffable"]
    assert ids == [-1, 0, 1, 2, 2, 3, 3, 3, 4, 6, 8, 8, 8, 8, -1]

    # masking a batch by words: a word's tokens are predicted together or not at all
    input_ids = torch.arange(100, 112).repeat(400, 1)
    word_ids = torch.arange(12).div(3, rounding_mode="floor").repeat(400, 1)      # words of 3 tokens
    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False
    _, labels = mask_tokens(input_ids, maskable, mask_token_id=103, random_ids=torch.arange(200, 300),
                            probability=0.4, word_ids=word_ids, generator=torch.Generator().manual_seed(0))
    predicted = labels != -100
    words = word_ids.masked_fill(~maskable, -1)
    for word in range(4):
        in_word = (words == word)
        per_row = (predicted & in_word).sum(1)
        assert set(per_row.tolist()) <= {0, in_word[0].sum().item()}     # all of the word or none
    assert not predicted[~maskable].any()
    assert set(predicted.sum(1).tolist()) == {3, 4}     # budget round(0.4·10) = 4; a 3-token word first leaves 1


def test_whole_word_datamodule_uses_the_segmenter_and_names_jieba_when_missing(tokenizer, monkeypatch):
    pairs = lambda text: [text[i:i + 2] for i in range(0, len(text), 2)]    # "words" of two characters
    monkeypatch.setattr(corpus, "load_segmenter", lambda: pairs)
    dm = sample_corpus(tokenizer, valid_fraction=0.0, test_fraction=0.0, whole_word=True)
    rows = [row for row in dm.dataset("train")[:300]
            if all(len(t) == 1 and not t.isascii() for t in tokenizer.convert_ids_to_tokens(row["input_ids"])[1:-1])]
    assert len(rows) > 100
    batch = dm.collate(rows)
    predicted = batch["labels"] != -100
    assert predicted.any(1).all()
    for row in range(len(rows)):
        chosen = predicted[row, 1:len(rows[row]["input_ids"]) - 1].tolist()          # tokens between [CLS] and [SEP]
        assert all(chosen[i] == chosen[i + 1] for i in range(0, len(chosen) - 1, 2))

    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "jieba", None)
    with pytest.raises(ModuleNotFoundError, match=r"jieba.*pip install jieba"):
        sample_corpus(tokenizer, whole_word=True)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def default_corpus(data_dir, shared_cache) -> CorpusDataModule:
    cfg = compose_config(*CORPUS, f"paths.data_dir={data_dir}", f"data.cache_dir={shared_cache}/tokenized")
    dm = instantiate(cfg.data)
    dm.require(["train", "valid", "test"])
    return dm


def test_corpus_splits_are_fixed_disjoint_and_free_of_evaluation_sentences(default_corpus, data_dir):
    splits = {name: default_corpus.read_split(name) for name in ("train", "valid", "test")}
    assert {name: len(s) for name, s in splits.items()} == CORPUS_SIZES
    keys = {name: {dedup_key(s) for s in sentences} for name, sentences in splits.items()}
    assert sum(map(len, keys.values())) == sum(CORPUS_SIZES.values())       # deduplicated
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"] and not keys["valid"] & keys["test"]
    everything = set().union(*keys.values())
    for source in default_corpus.exclude:                                    # e.g. ATEC test, LCCC-base valid
        held_out = {dedup_key(t) for t in corpus.texts_of(source, find_file(data_dir / source.file))}
        assert not everything & held_out, source.file
    assert "一个人能有两个花呗吗" in splits["valid"] + splits["train"] + splits["test"]  # afqmc train


def test_split_depends_on_the_sentence_only_and_caps_are_nested(data_dir):
    sources = [{"file": "stsb_zh/STS-B.train.data", "format": "tsv", "fields": [0, 1]},
               {"file": "lccc/toy_data.json", "format": "json_dialogues", "key": "train"}]

    def splits(sources, **options):
        dm = CorpusDataModule(name="c", root=str(data_dir), sources=sources, valid_fraction=0.05,
                              test_fraction=0.05, **options)
        return {name: dm.read_split(name) for name in ("train", "valid", "test")}

    forward, backward = splits(sources), splits(sources[::-1])
    assert forward == backward                                   # file order changes nothing
    assert {k: len(v) for k, v in forward.items()} == {"train": 11940, "valid": 635, "test": 691}
    assert "你去那儿竟然不喊我生气了，快点给我道歉" in forward["train"] + forward["valid"] + forward["test"]
    capped = splits(sources, max_sentences=500)
    assert capped["train"] == forward["train"][:500]
    assert capped["valid"] == forward["valid"] and capped["test"] == forward["test"]


def test_missing_sources_fail_or_are_skipped_and_bad_lines_name_file_and_line(tmp_path, caplog):
    (tmp_path / "a.json").write_text('{"sentence": "第一句"}\n{"sentence": 2}\n', encoding="utf-8")
    present = {"file": "a.json", "format": "json_lines", "fields": ["sentence"]}
    dm = CorpusDataModule(name="c", root=str(tmp_path), sources=[present, {"file": "b.tsv", "format": "tsv",
                                                                            "fields": [0, 1]}], source="somewhere")
    with pytest.raises(MissingSplitError, match=r"b\.tsv.*b\.tsv\.xz.*somewhere"):
        dm.require(["train"])
    dm = CorpusDataModule(name="c", root=str(tmp_path), sources=[
        present, {"file": "b.tsv", "format": "tsv", "fields": [0, 1], "optional": True}])
    dm.require(["train"])
    with pytest.raises(DataFormatError, match=f"^{tmp_path / 'a.json'}:2: "):
        dm.read_split("train")
    assert "b.tsv is not on disk, skipped" in caplog.text
    with pytest.raises(MissingSplitError, match="no dev split"):
        dm.require(["dev"])


def masked_lm(backbone, init=bert):
    return MaskedLM(backbone=backbone, loss=TokenCrossEntropy(), optimizer=torch.optim.AdamW, scheduler=constant,
                    init=init, monitor="val/loss", monitor_mode="min", data=DataInfo("test"))


def test_mlm_head_is_dense_act_layernorm_then_the_tied_embedding():
    torch.manual_seed(0)
    backbone = ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, dropout=0.0)
    model = masked_lm(backbone, init=xavier).eval()
    head, embedding = model.head, backbone.encoder.token_embedding.weight
    assert head.dense.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.2)   # drawn by init=xavier
    assert not any(p.shape == embedding.shape for p in head.parameters())              # tied, not copied
    with torch.no_grad():
        head.bias.normal_()
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.normal_()
    hidden = torch.randn(5, 32)
    x = F.gelu(hidden @ head.dense.weight.T + head.dense.bias)
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
    expected = (x * head.norm.weight + head.norm.bias) @ embedding.T + head.bias
    assert torch.allclose(head(hidden, embedding), expected, atol=1e-4)

    input_ids = torch.tensor([[101, 2769, 4263, 103, 102, 0]])
    labels = torch.tensor([[-100, -100, -100, 1266, -100, -100]])           # 1266 is in no input
    batch = {"input_ids": input_ids, "attention_mask": (input_ids > 0).long(), "labels": labels}
    batch["masked_positions"], batch["masked_labels"] = masked_positions(labels)   # 64 slots, 1 used
    logits, targets = model.masked_logits(batch)
    last = backbone(batch["input_ids"], batch["attention_mask"])[-1]
    assert torch.allclose(logits[:1], head(last[0, 3:4], embedding), atol=1e-5)
    assert targets.tolist() == [1266] + [-100] * 63
    model.loss(logits, targets).backward()
    assert embedding.grad[1266].abs().sum() > 0                              # the output side trains E too


def test_pretraining_lowers_the_mlm_loss_and_its_encoder_fine_tunes(tmp_path, default_corpus, data_dir, shared_cache):
    pretrain = ["task=masked_lm", "loss=lm", "backbone=scratch_tiny", *CORPUS, f"paths.data_dir={data_dir}",
                "logger=csv", "seed=1", "trainer.max_epochs=3", "data.max_sentences=1200", "data.batch_size=32",
                "data.eval_batch_size=256"]
    run_cli(tmp_path / "pretrain", *pretrain, env={"HUB_CACHE_DIR": str(shared_cache)})
    [results] = results_of(tmp_path / "pretrain")
    out = tmp_path / "pretrain" / "outputs"
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    val_losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]

    # the untrained model on the same test sentences and masks (eval_seed), measured here
    cfg = compose_config(*pretrain[:3], "data=corpus")
    torch.manual_seed(1)
    backbone = build_backbone(cfg, get_object(cfg.backbone._target_))
    model = instantiate(cfg.task, backbone=backbone, loss=instantiate(cfg.loss), data=DataInfo("corpus"),
                        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler),
                        init=instantiate(cfg.init)).eval()
    default_corpus.set_tokenizer(backbone.tokenizer)
    default_corpus.setup("test")
    total = count = 0.0
    with torch.no_grad():
        for batch in default_corpus.test_dataloader():
            logits, labels = model.masked_logits(batch)
            total += F.cross_entropy(logits, labels, reduction="sum").item()   # ignores the unused slots
            count += (labels != -100).sum().item()
    untrained = total / count
    vocab = len(backbone.tokenizer)
    assert untrained == pytest.approx(math.log(vocab), abs=0.1), (untrained, math.log(vocab))

    trained = results["test"]["test/loss"]
    assert results["status"] == "completed" and results["best"]["metric"] == "val/loss"
    assert trained < untrained - 2.0 and min(val_losses) <= val_losses[0] < untrained - 1.5, (untrained, val_losses)
    assert results["test"]["test/accuracy"] > 0.01          # chance: 1 / 21128

    # backbone.pt holds the best checkpoint's encoder and its architecture
    [saved_path] = out.rglob("backbone.pt")
    saved = torch.load(saved_path, weights_only=True)
    best = torch.load(results["best"]["path"], map_location="cpu", weights_only=False)["state_dict"]
    assert saved["config"]["hidden_size"] == 128 and saved["config"]["vocab_size"] == vocab
    assert saved["encoder"].keys() == backbone.encoder.state_dict().keys()
    assert all(torch.equal(v, best[f"backbone.encoder.{k}"]) for k, v in saved["encoder"].items())

    # fine-tuning starts from it: the task leaves the loaded weights alone ...
    finetune = ["task=bi_encoder", "data=stsb_sample", "loss=cosent", "backbone=scratch_tiny",
                f"backbone.checkpoint={saved_path}"]
    cfg = compose_config(*finetune)
    loaded = build_backbone(cfg, get_object(cfg.backbone._target_))
    instantiate(cfg.task, backbone=loaded, loss=instantiate(cfg.loss), data=DataInfo("stsb_sample"),
                optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler), init=instantiate(cfg.init))
    assert not loaded.from_scratch
    assert all(torch.equal(v, saved["encoder"][k]) for k, v in loaded.encoder.state_dict().items())
    # ... and the run completes
    run_cli(tmp_path / "finetune", *finetune, "trainer.max_epochs=1", "logger=csv")
    [tuned] = results_of(tmp_path / "finetune")
    assert tuned["status"] == "completed" and tuned["test"]["test/spearman"] is not None
    [log] = (tmp_path / "finetune" / "outputs").rglob("run.log")
    assert f"backbone weights from {saved_path}" in log.read_text()


def test_token_masking_takes_each_sentences_budget_as_a_uniform_subset():
    """choose_tokens (the tensor form used when every token is a word): exactly k = max(1, round(0.15·n)) of each
    packed sentence's n maskable tokens, never another token, each position equally likely, as choose_words."""
    generator = torch.Generator().manual_seed(0)
    maskable = torch.rand(64, 40, generator=generator) < 0.8
    texts = torch.sort(torch.randint(1, 5, (64, 40), generator=generator), dim=1).values
    selected = choose_tokens(maskable, texts, 0.15, generator)
    assert not selected[~maskable].any()
    for row in range(64):
        for text in texts[row].unique().tolist():
            mine = maskable[row] & (texts[row] == text)
            n = int(mine.sum())
            assert int((selected[row] & mine).sum()) == (max(1, round(0.15 * n)) if n else 0)
    one_sentence, ones = torch.ones(1, 30, dtype=torch.bool), torch.ones(1, 30, dtype=torch.long)
    draws = 3000
    frequency = sum(choose_tokens(one_sentence, ones, 0.15, generator)[0].double() for _ in range(draws)) / draws
    by_words = torch.zeros(30, dtype=torch.float64)
    for _ in range(draws):
        by_words[choose_words([[i] for i in range(30)], 0.15, generator)] += 1 / draws
    k = round(0.15 * 30) / 30       # 4 of 30 (round half to even, as Python's round)
    tolerance = 5 * (k * (1 - k) / draws) ** 0.5
    assert (frequency - k).abs().max() < tolerance and (by_words - k).abs().max() < tolerance
