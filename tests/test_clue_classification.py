"""data=afqmc|tnews|iflytek|ocnli|cmnli|csl|wsc with task=classifier: counts of SOURCES.md, the inputs of
kexue.fm/archives/8739, clear errors, the CLUE submission files, and a run that learns."""
import collections
import json

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoTokenizer, BertTokenizer

from datamodules.clue import join_pair, mark_spans
from lit_models.classifier import Classifier
from lit_models.components.backbones import VOCAB_DIR, ScratchBackbone
from lit_models.components.losses import CrossEntropyLoss
from tests.conftest import compose_config, results_of, run_cli
from text.files import DataFormatError, MissingSplitError
from text.info import DataInfo

# A tiny model gains nothing from intra-op threads; one thread keeps the runs' time steady on shared cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def clue(name, data_dir, *overrides):
    return instantiate(compose_config("task=classifier", f"data={name}", "loss=cross_entropy",
                                      f"paths.data_dir={data_dir}", *overrides).data)


@pytest.fixture(scope="module")
def bert_tokenizer():
    return BertTokenizer.from_pretrained(str(VOCAB_DIR / "bert-base-chinese"))


# (train, valid, test) rows of SOURCES.md, minus the "-" rows; None: not in the data folder
SIZES = {"afqmc": (34334, 4316, 3861), "tnews": (53360, 10000, None), "iflytek": (None, 2599, 2600),
         "ocnli": (50486 - 49, 3000 - 50, 3000), "csl": (20000, 3000, 3000), "wsc": (1244, 304, 2574)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_split_sizes_equal_sources_md(name, data_dir):
    dm = clue(name, data_dir)
    for split, expected in zip(("train", "valid", "test"), SIZES[name]):
        if expected is None:
            assert not dm.has_split(split)
            continue
        examples = dm.read_split(split)
        assert len(examples) == expected, split
        assert (examples.labels is None) == (split == "test")
        if split == "test":  # the submission needs every test row's own id, all distinct
            assert len(set(examples.ids)) == expected
    assert dm.dropped_rows.get("train", 0) == (49 if name == "ocnli" else 0)
    assert dm.dropped_rows["valid"] == (50 if name == "ocnli" else 0)


def test_label_maps_come_from_the_official_labels_files(data_dir):
    tnews, iflytek = clue("tnews", data_dir), clue("iflytek", data_dir)
    assert tnews.info.num_labels == 15 and iflytek.info.num_labels == 119
    assert tnews.info.label_names == tuple(tnews.label_names)
    assert tnews.label_names[:3] == ["100", "101", "102"] and tnews.label_descriptions["108"] == "news_edu"
    assert "105" not in tnews.label_names and iflytek.label_names == [str(i) for i in range(119)]
    train = tnews.read_split("train")   # every label of the data is in the map (else read_split raises)
    assert set(train.labels) == set(range(15))
    assert tnews.label_names[train.labels[0]] == "108"   # first row: {"label": "108", "label_desc": "news_edu"}
    assert set(iflytek.read_split("valid").labels) <= set(range(119))


def test_predict_setup_passes_over_a_missing_test_file(data_dir, bert_tokenizer):
    dm = clue("tnews", data_dir)   # predict=true then writes the dev predictions only
    dm.set_tokenizer(bert_tokenizer)
    dm.setup("predict")
    assert dm.datasets == {} and dm.prediction_splits == ("valid", "test") and not dm.has_split("test")


def test_iflytek_trains_on_fewclue_when_pointed_at_it(data_dir):
    dm = clue("iflytek", data_dir, "data.files.train=${paths.data_dir}/fewclue/iflytek/train_few_all.json")
    train = dm.read_split("train")
    assert len(train) == 3024
    assert dm.label_names[train.labels[0]] == "10"   # FewCLUE writes the label as the number 10 (社区服务)


def test_known_label_sets(data_dir):
    assert clue("ocnli", data_dir).label_names == ["entailment", "neutral", "contradiction"]
    assert clue("wsc", data_dir).label_names == ["false", "true"]
    assert clue("afqmc", data_dir).label_names == clue("csl", data_dir).label_names == ["0", "1"]


def test_a_pair_is_one_sequence_with_one_sep_between_and_no_segment_ids(data_dir, bert_tokenizer, tmp_path):
    dm = clue("afqmc", data_dir, f"data.cache_dir={tmp_path}")
    dm.set_tokenizer(bert_tokenizer)
    first, second = dm.read_split("valid").texts[0]
    ids = dm.dataset("valid").token_ids[0]
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    expected = [cls, *bert_tokenizer.encode(first, add_special_tokens=False), sep,
                *bert_tokenizer.encode(second, add_special_tokens=False), sep]
    assert ids == expected and ids.count(sep) == 2
    batch = dm.collate([dm.dataset("valid")[i] for i in range(4)])
    assert "token_type_ids" not in batch      # the backbone then uses segment 0 everywhere (the post)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["labels"].tolist() == dm.read_split("valid").labels[:4]
    assert batch["attention_mask"].sum(1).tolist() == [len(dm.dataset("valid")[i][1]) for i in range(4)]


def test_e5_prefix_goes_before_the_first_text_only(data_dir, e5_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(e5_dir)   # XLM-R style: <s> … </s>, not character-level
    dm = clue("afqmc", data_dir, f"data.cache_dir={tmp_path}")
    dm.set_tokenizer(tokenizer, "query: ")
    first, second = dm.read_split("valid").texts[0]
    ids = dm.dataset("valid").token_ids[0]
    expected = [tokenizer.cls_token_id, *tokenizer.encode("query: " + first, add_special_tokens=False),
                tokenizer.sep_token_id, *tokenizer.encode(second, add_special_tokens=False), tokenizer.sep_token_id]
    assert ids == expected and ids.count(tokenizer.sep_token_id) == 2


def test_pairs_are_cut_longest_first():
    cls, sep = -1, -2
    # budget 17: the first text is cut to the second's length, then both in turn, the first on a tie
    assert join_pair(list(range(100)), list(range(100, 110)), cls, sep, 20) == \
        [cls, *range(8), sep, *range(100, 109), sep]
    assert join_pair(list(range(5)), list(range(100, 300)), cls, sep, 20) == [cls, *range(5), sep, *range(100, 112), sep]
    assert join_pair([1, 2], [3], cls, sep, 20) == [cls, 1, 2, sep, 3, sep]


def test_csl_joins_keywords_with_a_fullwidth_semicolon_after_the_abstract(data_dir, bert_tokenizer, tmp_path):
    dm = clue("csl", data_dir, f"data.cache_dir={tmp_path}", "data.train_limit=1")
    abstract, keywords = dm.read_split("train").texts[0]
    assert keywords == "粒子；铁化合物；联合；0.05" and abstract.startswith("目的探讨常见氧化铁纳米粒子")
    dm.set_tokenizer(bert_tokenizer)
    ids = dm.dataset("train").token_ids[0]
    keyword_ids = bert_tokenizer.encode(keywords, add_special_tokens=False)
    assert len(ids) == 128 and ids[-len(keyword_ids) - 1:-1] == keyword_ids   # the long abstract is what is cut


def test_wsc_marks_both_spans_at_their_positions(data_dir):
    dm = clue("wsc", data_dir)
    [marked] = dm.read_split("train").texts[0]   # span1 伤口@3, span2 它们@27
    assert marked == "裂开的_伤口_涂满尘土，里面有碎石子和木头刺，我小心翼翼把[它们]剔除出去。"
    [marked] = dm.read_split("test").texts[0]    # span2 他们@17 comes before span1 曹操@46
    assert marked.index("[他们]") == 17 and marked[46 + 2:46 + 2 + 4] == "_曹操_"
    with pytest.raises(ValueError, match="span1_text '伤口' is not at span1_index 4"):
        mark_spans("裂开的伤口", {"span1_index": 4, "span1_text": "伤口", "span2_index": 0, "span2_text": "裂"})


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.mark.parametrize("bad_line, message", [
    ('{"sentence1": "借呗", "sentence2": "花呗", ', "not valid JSON"),
    ('{"sentence1": "借呗", "label": "0"}', "missing key 'sentence2'"),
    ('{"sentence1": "借呗", "sentence2": "花呗", "label": "2"}', "label '2' is not one of the 2 labels"),
    ('["借呗", "花呗", "0"]', "expected a JSON object"),
])
def test_a_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    good = '{"sentence1": "借呗", "sentence2": "花呗", "label": "1"}'
    write_lines(tmp_path / "afqmc" / "train.json", [good, "", bad_line])
    dm = clue("afqmc", tmp_path)
    with pytest.raises(DataFormatError, match=rf"{tmp_path / 'afqmc' / 'train.json'}:3: {message}"):
        dm.read_split("train")


def test_a_wsc_span_off_its_index_names_file_and_line(tmp_path):
    row = {"target": {"span1_index": 1, "span1_text": "伤口", "span2_index": 5, "span2_text": "它"},
           "idx": 0, "label": "true", "text": "裂开的伤口，把它剔除。"}
    write_lines(tmp_path / "cluewsc2020" / "dev.json", [json.dumps(row, ensure_ascii=False)])
    with pytest.raises(DataFormatError, match=r"dev.json:1: span1_text '伤口' is not at span1_index 1"):
        clue("wsc", tmp_path).read_split("valid")


@pytest.mark.parametrize("name, file", [("cmnli", "cmnli/train.json"), ("iflytek", "iflytek/train.json")])
def test_a_missing_official_file_is_named_with_its_source(name, file, data_dir):
    with pytest.raises(MissingSplitError, match="the train split is not on disk") as error:
        clue(name, data_dir).require(["train", "valid"])
    assert str(data_dir / file) in str(error.value) and "https://github.com/CLUEbenchmark/CLUE" in str(error.value)


def test_write_predictions_writes_the_submission_in_test_file_order(data_dir, tmp_path):
    dm = clue("wsc", data_dir)
    ids = dm.examples_of("test").ids
    predictions = [{"index": i, "label": i % 2} for i in reversed(range(len(ids)))]
    predictions += predictions[:5]   # a distributed sampler pads with repeats
    [path] = dm.write_predictions("test", predictions, tmp_path)
    assert path == tmp_path / "cluewsc11_predict.json"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": row_id, "label": ["false", "true"][i % 2]} for i, row_id in enumerate(ids)]
    [dev] = dm.write_predictions("valid", [{"index": i, "label": 1} for i in range(304)], tmp_path)
    assert dev == tmp_path / "dev" / "cluewsc11_predict.json"
    dev_rows = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    assert dev_rows[0] == {"id": 1, "label": "true", "gold": "true"}   # the dev file's "idx" and label
    with pytest.raises(ValueError, match="predictions for 2573 rows, the split has 2574"):
        dm.write_predictions("test", predictions[1:-5], tmp_path)


def test_classifier_head_is_drawn_by_init_and_predicts_probabilities():
    backbone = ScratchBackbone(hidden_size=32, num_layers=1, num_heads=4, ffn_size=64)

    def init(weight, role="other"):
        torch.nn.init.constant_(weight, 0.5)

    model = Classifier(data=DataInfo("test", num_labels=3, label_names=("a", "b", "c")), backbone=backbone,
                       loss=CrossEntropyLoss(),
                       optimizer=None, scheduler=None, init=init, monitor="val/accuracy").eval()
    linear = model.head[-1]
    assert torch.all(linear.weight == 0.5) and torch.all(linear.bias == 0)
    batch = {"input_ids": torch.tensor([[101, 671, 102], [101, 102, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]), "index": torch.tensor([7, 9])}
    out = model.predict_step(batch, 0)
    assert [row["index"] for row in out] == [7, 9]
    for row in out:
        assert len(row["probabilities"]) == 3 and sum(row["probabilities"]) == pytest.approx(1.0)
        assert row["label"] == max(range(3), key=row["probabilities"].__getitem__)


def read_json_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def macro_f1(gold, predicted):
    scores = []
    for label in set(gold) | set(predicted):
        tp = sum(g == p == label for g, p in zip(gold, predicted))
        fp, fn = sum(p == label != g for g, p in zip(gold, predicted)), sum(g == label != p for g, p in zip(gold, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def test_afqmc_predict_writes_the_leaderboard_file_and_dev_predictions(tmp_path, data_dir):
    run_cli(tmp_path, "task=classifier", "data=afqmc", "backbone=scratch_tiny", "loss=cross_entropy", "trainer=cpu",
            "logger=csv", f"paths.data_dir={data_dir}", "trainer.max_epochs=1", "data.train_limit=256",
            "data.max_length=32", "data.eval_batch_size=256", "predict=true", env=ONE_THREAD)
    [results] = results_of(tmp_path)
    folder = tmp_path / "outputs"
    [test_file], [dev_file] = folder.rglob("predictions/afqmc_predict.json"), folder.rglob("dev/afqmc_predict.json")
    assert sorted(results["predictions"]) == sorted(map(str, (dev_file, test_file)))
    rows = read_json_lines(test_file)
    assert len(rows) == 3861 and [row["id"] for row in rows] == list(range(3861))   # test.json's ids, in order
    assert all(set(row) == {"id", "label"} and row["label"] in {"0", "1"} for row in rows)
    dev = read_json_lines(dev_file)
    assert len(dev) == 4316
    # the dev file scores what the best checkpoint's validation logged (1 epoch: the last validation)
    gold, predicted = [row["gold"] for row in dev], [row["label"] for row in dev]
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(dev)
    assert results["best"]["value"] == pytest.approx(accuracy, abs=1e-6)
    assert results["final_validation"]["val/macro_f1"] == pytest.approx(macro_f1(gold, predicted), abs=1e-5)


def test_training_on_tnews_beats_the_majority_class(tmp_path, data_dir):
    run_cli(tmp_path, "task=classifier", "data=tnews", "backbone=scratch_tiny", "loss=cross_entropy", "trainer=cpu",
            "logger=csv", f"paths.data_dir={data_dir}", "trainer.max_epochs=2", "data.train_limit=3000",
            "data.max_length=48", "data.eval_batch_size=256", "+trainer.limit_val_batches=4", env=ONE_THREAD)
    [results] = results_of(tmp_path)
    # validation saw the first 4 × 256 dev rows
    gold = clue("tnews", data_dir).read_split("valid").labels[:1024]
    majority = collections.Counter(gold).most_common(1)[0][1] / len(gold)
    assert majority == pytest.approx(112 / 1024)
    assert results["best"]["metric"] == "val/accuracy" and results["best"]["value"] > majority + 0.1
