"""DialoGPT on LCCC (kexue.fm/archives/7718) and decoding (kexue.fm/archives/7500): data, model, metric, CLI."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_object, instantiate
from torchmetrics.text import Perplexity

from datamodules.lccc import LCCCDataModule, read_dialogues
from lit_models.components.backbones import ScratchBackbone
from lit_models.components.generation import (
    greedy,
    top_k_filter,
    top_k_sampling,
    top_p_filter,
    top_p_sampling,
)
from lit_models.components.init import bert
from lit_models.components.losses import TokenCrossEntropy
from lit_models.components.schedules import constant
from lit_models.dialogue_lm import DialogueLM
from run import build_backbone
from tests.conftest import compose_config, results_of, run_cli
from text.dialogue import build_sample, encode_prompt, join_characters
from text.files import DataFormatError, MissingSplitError
from text.info import DataInfo

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return ScratchBackbone(hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, dropout=0.0)


@pytest.fixture(scope="module")
def model(backbone):
    return DialogueLM(backbone=backbone, loss=TokenCrossEntropy(), optimizer=torch.optim.AdamW, scheduler=constant,
                      init=bert, monitor="val/perplexity", monitor_mode="min", data=DataInfo("test", max_length=64)
                      ).eval()


def test_characters_are_joined_and_latin_words_keep_their_space():
    assert join_characters("我 最 近 吃 了 3 1 个 火 锅 ！") == "我最近吃了31个火锅！"
    assert join_characters("伤 心 p l u s") == "伤心plus"          # character-tokenized Latin: no boundary left
    assert join_characters("hello world 你 好") == "hello world你好"


def test_a_dialogue_is_cls_turns_sep_with_alternating_speakers_and_every_turn_predicted():
    sample = build_sample([[1, 2], [3], [4, 5, 6]], CLS, SEP, max_length=64)
    assert sample["input_ids"] == [CLS, 1, 2, SEP, 3, SEP, 4, 5, 6, SEP]
    assert sample["token_type_ids"] == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert sample["labels"] == [-100, 1, 2, SEP, 3, SEP, 4, 5, 6, SEP]
    replies_only = build_sample([[1, 2], [3], [4, 5, 6]], CLS, SEP, max_length=64, predict_first_turn=False)
    assert replies_only["labels"] == [-100, -100, -100, -100, 3, SEP, 4, 5, 6, SEP]


def test_truncation_drops_leading_turns_then_shortens_the_longest_of_the_last_two():
    turns = [[1, 2, 3], [4, 5], [6, 7, 8], [9]]
    kept = build_sample(turns, CLS, SEP, max_length=8)       # [CLS] 6 7 8 [SEP] 9 [SEP] = 7 tokens
    assert kept["input_ids"] == [CLS, 6, 7, 8, SEP, 9, SEP]
    assert kept["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1]  # speakers counted from the first turn kept
    assert build_sample(turns, CLS, SEP, max_length=10)["input_ids"] == [CLS, 4, 5, SEP, 6, 7, 8, SEP, 9, SEP]
    cut = build_sample([[1, 2], [3, 4, 5, 6, 7], [8, 9]], CLS, SEP, max_length=7)
    assert cut["input_ids"] == [CLS, 3, 4, SEP, 8, 9, SEP]    # the last two turns stay, the longer one cut
    assert cut["labels"] == [-100, 3, 4, SEP, 8, 9, SEP]


def write_json(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_batches_from_a_file_pad_per_batch_with_labels_ignored_at_padding(tmp_path, backbone):
    write_json(tmp_path / "d.json", [["你 好", "你 好 啊 ！"], ["吃 了 吗", "吃 了", "吃 的 什 么"]])
    dm = LCCCDataModule("t", str(tmp_path), {"valid": "d.json"}, source="-", max_length=64, batch_size=2,
                        cache_dir=str(tmp_path / "cache"))
    dm.set_tokenizer(backbone.tokenizer)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    tokenizer = backbone.tokenizer
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    second = [CLS, *ids("吃了吗"), SEP, *ids("吃了"), SEP, *ids("吃的什么"), SEP]
    assert batch["input_ids"][1].tolist() == second
    assert batch["token_type_ids"][1].tolist() == [0] * 5 + [1] * 3 + [0] * 5
    first = [CLS, *ids("你好"), SEP, *ids("你好啊！"), SEP]
    assert batch["input_ids"][0].tolist() == first + [PAD] * (len(second) - len(first))
    assert batch["labels"][0].tolist() == [-100] + first[1:] + [-100] * (len(second) - len(first))
    assert batch["attention_mask"][0].tolist() == [1] * len(first) + [0] * (len(second) - len(first))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


@pytest.mark.parametrize("bad", [["只有一句"], ["你好", ""], ["你好", 3], "你好", []])
def test_a_malformed_dialogue_names_the_file_and_its_index(tmp_path, bad):
    path = write_json(tmp_path / "bad.json", [["你 好", "好"], ["在 吗", "在"], bad])
    with pytest.raises(DataFormatError, match="^" + re.escape(f"{path}: dialogue 2 (0-based)")):
        read_dialogues(path)
    toy = write_json(tmp_path / "toy.json", {"train": [["a", "b"]], "valid": [bad]})
    with pytest.raises(DataFormatError, match="^" + re.escape(f"{toy} ['valid']: dialogue 0 ")):
        read_dialogues(toy, "valid")
    with pytest.raises(DataFormatError, match=re.escape("of ['train', 'valid']; name one as toy.json#<key>")):
        read_dialogues(toy)


def test_split_sizes_and_the_missing_lccc_train_split(data_dir):
    lccc = instantiate(compose_config("data=lccc", f"paths.data_dir={data_dir}").data)
    assert len(lccc.read_split("valid")) == 20000 and len(lccc.read_split("test")) == 10000
    with pytest.raises(MissingSplitError) as error:
        lccc.require(["train", "valid", "test"])
    for name in ("LCCC-base_train.json", "LCCC-base_train.json.xz", "github.com/thu-coai/CDial-GPT",
                 str(data_dir / "lccc")):
        assert name in str(error.value)
    toy = instantiate(compose_config("data=lccc_toy", f"paths.data_dir={data_dir}").data)
    toy.require(["train", "valid", "test"])
    assert [len(toy.read_split(s)) for s in ("train", "valid", "test")] == [1000, 200, 200]
    assert toy.read_split("valid")[0][0] == "遭淋安逸了？"


def test_lccc_toy_ships_with_the_code_and_needs_no_data_folder(tmp_path):
    toy = instantiate(compose_config("data=lccc_toy", f"paths.data_dir={tmp_path / 'absent'}").data)
    toy.require(["train", "valid", "test"])
    assert toy.file_of("train").name == "toy_data.json.xz"
    assert [len(toy.read_split(s)) for s in ("train", "valid", "test")] == [1000, 200, 200]
    assert toy.read_split("valid")[0][0] == "遭淋安逸了？"


def test_the_causal_lm_sees_no_future_token(model):
    torch.manual_seed(1)
    ids = torch.randint(1000, 8000, (2, 12))
    types = torch.tensor([[0] * 6 + [1] * 6] * 2)
    mask = torch.ones_like(ids)
    before = model.logits(model.hidden(ids, mask, types))
    t = 7
    ids[:, t], types[:, t] = 9000, 0
    after = model.logits(model.hidden(ids, mask, types))
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-5)
    assert not torch.allclose(before[:, t], after[:, t], atol=1e-3)


def test_dialogue_lm_needs_our_transformer():
    from hub.config import ConfigError, check_config
    from tests.conftest import compose_config

    cfg = compose_config("task=dialogue_lm", "data=lccc_toy", "loss=lm", "backbone=pretrained")
    with pytest.raises(ConfigError, match=r"task=dialogue_lm does not work with backbone=pretrained: it needs a "
                                          r"from-scratch backbone=scratch_base\|scratch_small\|scratch_tiny"):
        check_config(cfg)


def test_perplexity_is_the_corpus_level_token_weighted_one():
    torch.manual_seed(2)
    batches = [(torch.randn(2, 9, 50), torch.randint(0, 50, (2, 9))),
               (torch.randn(1, 3, 50), torch.randint(0, 50, (1, 3)))]
    batches[0][1][0, 5:] = -100
    batches[1][1][0, 0] = -100
    metric, nll, count, per_batch = Perplexity(ignore_index=-100), 0.0, 0, []
    for logits, labels in batches:
        metric.update(logits, labels)
        terms = [-F.log_softmax(logits[b, t], -1)[labels[b, t]].item()
                 for b in range(labels.shape[0]) for t in range(labels.shape[1]) if labels[b, t] != -100]
        nll, count = nll + sum(terms), count + len(terms)
        per_batch.append(math.exp(sum(terms) / len(terms)))
    assert count == 2 * 9 - 4 + 3 - 1
    assert metric.compute().item() == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert abs(metric.compute().item() - sum(per_batch) / 2) > 1e-3    # not a mean of batch perplexities


def test_top_k_and_top_p_keep_eos_however_improbable():
    eos = 7
    logits = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, -30.0])
    kept = top_k_filter(logits, 3, eos).isfinite()
    assert kept.tolist() == [True, True, True, False, False, False, False, True]
    assert top_k_filter(logits, 3).isfinite().sum() == 3
    probs = torch.tensor([0.5, 0.3, 0.15, 0.04, 0.01, 1e-12])
    logits = probs.log()
    assert top_p_filter(logits, 0.7, 5).isfinite().tolist() == [True, True, False, False, False, True]
    assert top_p_filter(logits, 0.79, 5).isfinite().tolist() == [True, True, False, False, False, True]
    assert top_p_filter(logits, 0.81, None).isfinite().tolist() == [True, True, True, False, False, False]
    assert top_p_filter(logits, 0.1, None).isfinite().tolist() == [True, False, False, False, False, False]


class ScriptedLM:
    """next-token logits that depend on the sequence so far; records the segment ids it was given."""

    def __init__(self, eos_at: int | None, eos_logit: float = 10.0, vocab: int = 20, eos: int = 3):
        self.eos_at, self.eos_logit, self.vocab, self.eos, self.types = eos_at, eos_logit, vocab, eos, []

    def __call__(self, ids, types):
        self.types.append(types[0].tolist())
        g = torch.Generator().manual_seed(int(ids.sum()) * 31 + ids.shape[1])
        logits = torch.randn(self.vocab, generator=g)
        logits[self.eos] = self.eos_logit if ids.shape[1] - 2 == self.eos_at else -50.0
        return logits


def test_greedy_is_the_argmax_and_stops_at_eos_or_max_new_tokens():
    prompt, types = torch.tensor([[1, 5]]), torch.tensor([[0, 0]])
    lm = ScriptedLM(eos_at=None)
    out = greedy(lm, prompt, types, eos_id=3, segment_id=1, max_new_tokens=6)
    ids, expected = prompt, []
    for _ in range(6):
        expected.append(int(lm(ids, types).argmax()))
        ids = torch.cat([ids, torch.tensor([[expected[-1]]])], 1)
    assert out == expected and 3 not in out
    lm = ScriptedLM(eos_at=4)
    out = greedy(lm, prompt, types, eos_id=3, segment_id=1, max_new_tokens=10)
    assert len(out) == 5 and out[-1] == 3                             # stopped at eos, eos included
    assert lm.types[-1] == [0, 0, 1, 1, 1, 1]                          # new tokens carry the reply's segment


def test_sampling_stays_in_the_candidate_set_and_can_stop_on_an_improbable_eos():
    prompt, types = torch.tensor([[1, 5]]), torch.tensor([[0, 0]])
    generator = torch.Generator().manual_seed(0)
    best_path = greedy(ScriptedLM(eos_at=None), prompt, types, eos_id=3, segment_id=1, max_new_tokens=12)
    out = top_k_sampling(ScriptedLM(eos_at=None), prompt, types, eos_id=3, segment_id=1, max_new_tokens=12, k=1,
                         generator=generator)
    assert out == best_path                      # k = 1 is greedy when eos (logit −50) is never drawn
    # p = 0.01 keeps only the top token; eos (logit −50, outside any nucleus) is the one other candidate
    stopped = 0
    for _ in range(40):
        out = top_p_sampling(ScriptedLM(eos_at=None), prompt, types, eos_id=3, segment_id=1, max_new_tokens=4,
                             p=0.01, temperature=100.0, generator=generator)
        body = out[:-1] if out[-1] == 3 else out
        assert body == best_path[:len(body)]
        stopped += out[-1] == 3
    assert 0 < stopped < 40


def test_a_prompt_is_the_history_with_the_next_speakers_segment(backbone):
    ids, types, segment = encode_prompt(backbone.tokenizer, ["你 那 天 气 好 吗", "还好，不热"], 64)
    assert ids[0] == CLS and ids.count(SEP) == 2 and ids[-1] == SEP and segment == 0
    assert types == [0] * 8 + [1] * 6
    ids, types, segment = encode_prompt(backbone.tokenizer, ["一二三四五六七八九十", "好"], max_length=6)
    assert ids == [CLS, backbone.tokenizer.convert_tokens_to_ids("好"), SEP] and segment == 1


def test_decoding_options_are_checked(model):
    with pytest.raises(ValueError, match="strategy in"):
        model.respond(["你好"], strategy="beam")
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \(0, 62\)"):
        model.respond(["你好"], max_new_tokens=64)
    reply = model.reply_ids(*encode_prompt(model.backbone.tokenizer, ["你好"], 60), strategy="greedy", max_new_tokens=4)
    assert 0 < len(reply) <= 4


def test_training_on_lccc_toy_lowers_perplexity_and_the_checkpoint_responds(tmp_path, data_dir):
    common = ["task=dialogue_lm", "data=lccc_toy", "loss=lm", "backbone=scratch_tiny", f"paths.data_dir={data_dir}",
              "logger=csv", "seed=3", "data.max_length=64", "data.batch_size=16", "data.eval_batch_size=50"]
    # the untrained model on the valid split (evaluated as the test split)
    run_cli(tmp_path / "untrained", *common, "train=false", "data.files.test=${data.files.valid}")
    run_cli(tmp_path / "trained", *common, "data.train_limit=160", "trainer.max_epochs=1", "optimizer.lr=3e-3",
            "scheduler=constant", "test=false")                      # 10 steps
    [untrained], [trained] = results_of(tmp_path / "untrained"), results_of(tmp_path / "trained")
    before, after = untrained["test"]["test/perplexity"], trained["best"]["value"]
    assert trained["best"]["metric"] == "val/perplexity"
    assert before > 10000 and after < before / 5, (before, after)   # untrained: about the vocabulary size, 21128
    assert untrained["test"]["test/loss"] == pytest.approx(math.log(before), rel=1e-4)

    cfg = compose_config(*common)
    model = DialogueLM.load_from_checkpoint(        # the components built as run.py builds them
        trained["best"]["path"], map_location="cpu",
        backbone=build_backbone(cfg, get_object(cfg.backbone._target_)), weights_only=True,
        loss=instantiate(cfg.loss), optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler),
        init=instantiate(cfg.init))
    assert model.max_length == 64 and model.decoding["strategy"] == "top_p"
    reply = model.respond(["我 最 近 天 天 吃 火 锅"], generator=torch.Generator().manual_seed(0))
    assert isinstance(reply, str) and "[SEP]" not in reply
    assert isinstance(model.respond(["你好"], strategy="greedy", max_new_tokens=5), str)

    expected = model.respond(["你好"], generator=torch.Generator().manual_seed(3), strategy="top_k", max_new_tokens=5)
    proc = run_cli(tmp_path / "generate", *common, "mode=generate", f"ckpt_path={trained['best']['path']}",
                   "prompt='你好'", "task.decoding.strategy=top_k", "task.decoding.max_new_tokens=5")
    assert expected and proc.stdout.splitlines()[-1] == expected     # the CLI replies as the model does

    dm = instantiate(cfg.data)
    dm.set_tokenizer(model.backbone.tokenizer)
    dm.setup("predict")
    batch = {k: v[:2] for k, v in next(iter(dm.predict_dataloader())).items()}
    first = model.predict_step(batch, 0)[0]
    dialogue = dm.read_split("test")[0]
    assert first["context"] == dialogue[:-1] and first["reference"] == dialogue[-1]
    assert isinstance(first["reply"], str)

