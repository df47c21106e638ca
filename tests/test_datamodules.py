import lzma
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from datamodules.cluener import ENTITY_TYPES
from datamodules.prepare_atec import derive_train, main
from datamodules.sts import STSDataModule, read_pairs
from lit_models.components.backbones import ScratchBackbone
from tests.conftest import compose_config
from text.files import DataFormatError, MissingSplitError
from text.info import DataInfo
from text.padding import pad_batch

# Split sizes as documented in the data folder's SOURCES.md (None: not on disk).
SPLIT_SIZES = {
    "stsb": {"train": 5231, "valid": 1458, "test": 1361},
    "bq": {"train": 100000, "valid": 10000, "test": 10000},
    "lcqmc": {"train": None, "valid": 8802, "test": 12500},
    "pawsx": {"train": None, "valid": 2000, "test": 2000},
    "atec": {"valid": 20000, "test": 20000},
    "stsb_sample": {"train": 600, "valid": 200, "test": 200},
}


def datamodule(name: str, data_dir, *overrides) -> STSDataModule:
    cfg = compose_config(f"data={name}", f"paths.data_dir={data_dir}", *overrides)
    return instantiate(cfg.data)


@pytest.mark.parametrize("name", sorted(SPLIT_SIZES))
def test_split_sizes_match_the_sources(name, data_dir):
    dm = datamodule(name, data_dir)
    for split, size in SPLIT_SIZES[name].items():
        if size is None:
            with pytest.raises(MissingSplitError):
                dm.read_split(split)
        else:
            pairs = dm.read_split(split)
            assert len(pairs) == size
            assert set(pairs.labels) <= ({0.0, 1.0} if dm.label_max == 1 else {0.0, 0.2, 0.4, 0.6, 0.8, 1.0})


def test_missing_split_names_the_files_and_the_source(data_dir):
    dm = datamodule("lcqmc", data_dir)
    with pytest.raises(MissingSplitError) as error:
        dm.require(["train", "valid", "test"])
    message = str(error.value)
    for name in ("LCQMC.train.data", "LCQMC.train.data.xz", "LCQMC.train.data.gz", "icrc.hitsz.edu.cn"):
        assert name in message
    assert str(data_dir / "lcqmc") in message


def test_atec_train_is_derived_without_valid_or_test_pairs(data_dir, tmp_path):
    out = tmp_path / "derived" / "atec" / "ATEC.train.data"
    counts = derive_train(data_dir, out)
    assert counts == {"raw": 39346, "in_valid_or_test": 15285, "train": 24061}  # SOURCES.md: 15,285 overlap
    dm = datamodule("atec", data_dir, f"paths.derived_dir={tmp_path / 'derived'}")
    train, test = dm.read_split("train"), dm.read_split("test")
    assert len(train) == 24061
    held_out = {frozenset(p) for p in zip(test.first, test.second)}
    assert not any(frozenset(p) in held_out for p in zip(train.first, train.second))


@pytest.mark.parametrize("env", [{}, {"HUB_DATA_DIR": "data"}, {"HUB_DERIVED_DIR": "derived"}], ids=str)
def test_prepare_atec_writes_where_data_atec_reads_train(tmp_path, monkeypatch, capsys, env):
    data_dir = tmp_path / "data"
    (data_dir / "atec" / "original").mkdir(parents=True)
    (data_dir / "atec" / "original" / "atec_nlp_sim_train.csv").write_text(
        "1\t花呗怎么还\t怎么还花呗\t1\n2\t借呗额度\t花呗额度\t0\n3\t怎么开通\t如何开通\t1\n", encoding="utf-8")
    (data_dir / "atec" / "ATEC.valid.data").write_text("借呗额度\t花呗额度\t0\n", encoding="utf-8")
    (data_dir / "atec" / "ATEC.test.data").write_text("如何开通\t怎么开通\t1\n", encoding="utf-8")
    for name in ("HUB_DATA_DIR", "HUB_DERIVED_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, folder in env.items():
        monkeypatch.setenv(name, str(tmp_path / folder))
    given = "HUB_DATA_DIR" not in env                  # the data folder as an argument, or from the environment
    main(["--data-dir", str(data_dir)] if given else [])
    written = Path(re.search(r"written to (\S+)", capsys.readouterr().out).group(1))
    dm = instantiate(compose_config("data=atec", *([f"paths.data_dir={data_dir}"] if given else [])).data)
    assert dm.file_of("train") == written
    assert dm.read_split("train").first == ["花呗怎么还"]
    if "HUB_DERIVED_DIR" in env:
        assert written.is_relative_to(tmp_path / "derived")


@pytest.mark.parametrize("line, label_max", [
    ("只有一句话\t5", 5),                       # a field missing
    ("句子一\t句子二\t6", 5),                    # score above the range
    ("句子一\t句子二\t-1", 5),
    ("句子一\t句子二\t2", 1),                    # binary label that is not 0/1
    ("句子一\t句子二\tyes", 1),
    ("\t句子二\t1", 1),                          # empty sentence
    ("句子一\t句子二\t1\t额外", 1),               # an extra field
])
def test_a_malformed_line_names_file_and_line(tmp_path, line, label_max):
    path = tmp_path / "bad.data"
    path.write_text(f"好\t很好\t1\n\n行三\t行三\t0\n{line}\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"^{path}:4: "):
        read_pairs(path, label_max)


def test_compressed_files_are_found_and_read(tmp_path):
    with lzma.open(tmp_path / "X.valid.data.xz", "wt", encoding="utf-8") as f:
        f.write("一\t二\t1\n三\t四\t0\n")
    dm = STSDataModule("x", str(tmp_path), {"valid": "X.valid.data"}, label_max=1, source="-")
    assert dm.read_split("valid").labels == [1.0, 0.0]


@pytest.fixture(scope="module")
def tokenizer():
    return ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64).tokenizer


def test_tokenized_once_then_read_from_cache(tmp_path, tokenizer, monkeypatch):
    cfg = compose_config("data=stsb_sample", f"data.cache_dir={tmp_path}")
    dm = instantiate(cfg.data)
    dm.set_tokenizer(tokenizer)
    dm.setup("test")
    first = dm.datasets["test"].first
    assert len(list(tmp_path.glob("*.pt"))) == 1

    import text.tokens as tokenized
    monkeypatch.setattr(tokenized, "tokenize", lambda *a, **k: pytest.fail("tokenized again despite the cache"))
    again = instantiate(cfg.data)
    again.set_tokenizer(tokenizer)
    again.setup("test")
    assert again.datasets["test"].first == first
    monkeypatch.undo()

    shorter = instantiate(cfg.data, max_length=8)      # another max length is another cache entry
    shorter.set_tokenizer(tokenizer)
    shorter.setup("test")
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert max(map(len, shorter.datasets["test"].first)) == 8


def test_batches_stack_both_sentences_padded_to_the_longest(tokenizer):
    cfg = compose_config("data=stsb_sample", "data.cache_dir=null", "data.batch_size=4", "data.eval_batch_size=4")
    dm = instantiate(cfg.data)
    dm.set_tokenizer(tokenizer, text_prefix="")
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape == (8, int(lengths.max()))
    assert torch.equal(batch["input_ids"][batch["attention_mask"] == 0],
                       torch.full_like(batch["input_ids"][batch["attention_mask"] == 0], tokenizer.pad_token_id))
    pairs = dm.read_split("valid")
    expected = tokenizer(pairs.second[0], max_length=64, truncation=True)["input_ids"]
    assert batch["input_ids"][4, :len(expected)].tolist() == expected     # second sentences follow the first B
    assert batch["labels"].tolist() == pytest.approx(pairs.labels[:4]) and batch["labels"].dtype == torch.float32


def hand_padded(rows: list[dict], fill: dict) -> dict[str, torch.Tensor]:
    """The padders pad_batch replaced (text/padding.py `pad`, lccc's `pad_samples`, the collates of clue,
    cluener, cmrc2018, multiple_choice, corpus, sts): torch.full with the fill value, then each row copied in."""
    length = max(len(row["input_ids"]) for row in rows)
    batch = {"attention_mask": torch.zeros((len(rows), length), dtype=torch.long)}
    for key, value in fill.items():
        shape = (len(rows), length) + ((2,) if key == "offsets" else ())
        batch[key] = torch.full(shape, value, dtype=torch.bool if isinstance(value, bool) else torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        batch["attention_mask"][i, :n] = 1
        for key in fill:
            batch[key][i, :n] = torch.tensor(row[key])
    return batch


@pytest.mark.parametrize("lengths", [[3, 1, 5], [4], [2, 2], [1, 7, 7, 1]])
def test_pad_batch_equals_the_hand_written_padders(lengths):
    rows = [{"input_ids": list(range(10, 10 + n)), "token_type_ids": [i % 2] * n,
             "labels": [-100] + list(range(20, 20 + n - 1)), "offsets": [[k, k + 1] for k in range(n)],
             "span_mask": [k % 2 == 0 for k in range(n)]} for i, n in enumerate(lengths)]
    fill = {"input_ids": 0, "token_type_ids": 0, "labels": -100, "offsets": -1, "span_mask": False}
    padded, expected = pad_batch(rows, fill), hand_padded(rows, fill)
    assert set(padded) == set(expected)
    for key, tensor in expected.items():
        assert padded[key].dtype == tensor.dtype and torch.equal(padded[key], tensor), key
    assert all(padded["labels"][i, n:].eq(-100).all() for i, n in enumerate(lengths))
    assert padded["offsets"].shape == (len(lengths), max(lengths), 2)
    only_ids = pad_batch([{"input_ids": r["input_ids"]} for r in rows], {"input_ids": 1, "labels": -100})
    assert set(only_ids) == {"input_ids", "attention_mask"}             # a field the rows lack is not made up
    assert torch.equal(only_ids["input_ids"], hand_padded(rows, {"input_ids": 1})["input_ids"])


def test_sts_labels_are_score_over_label_max(tmp_path, tokenizer):
    (tmp_path / "s.valid.data").write_text("".join(f"句{s}\t子{s}\t{s}\n" for s in range(6)), encoding="utf-8")
    (tmp_path / "b.valid.data").write_text("一\t二\t1\n三\t四\t0\n", encoding="utf-8")
    graded = STSDataModule("s", str(tmp_path), {"valid": "s.valid.data"}, label_max=5, source="-", cache_dir=None)
    binary = STSDataModule("b", str(tmp_path), {"valid": "b.valid.data"}, label_max=1, source="-", cache_dir=None)
    assert graded.read_split("valid").labels == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert binary.read_split("valid").labels == [1.0, 0.0]
    graded.set_tokenizer(tokenizer, pair_encoding="joint")
    labels = graded.collate([graded.dataset("valid")[i] for i in range(6)])["labels"]
    assert (labels > 0.5).tolist() == [False, False, False, True, True, True]   # similar: a score of 3 or more


def test_pair_encoding_is_the_tasks_and_decides_the_batches(tmp_path, tokenizer):
    dm = STSDataModule("b", str(tmp_path), {"valid": "b.valid.data"}, label_max=1, source="-", cache_dir=None)
    (tmp_path / "b.valid.data").write_text("一\t二\t1\n三\t四五\t0\n", encoding="utf-8")
    for encoding, rows in (("separate", 4), ("joint", 2)):
        dm.set_tokenizer(tokenizer, pair_encoding=encoding)
        batch = dm.collate([dm.dataset("valid")[i] for i in range(2)])
        assert dm.pair_encoding == encoding and batch["input_ids"].shape[0] == rows
    with pytest.raises(ValueError, match="pair_encoding must be one of"):
        dm.set_tokenizer(tokenizer, pair_encoding="pairs")


def info_of(name: str, data_dir, *overrides) -> DataInfo:
    return instantiate(compose_config(f"data={name}", f"paths.data_dir={data_dir}", *overrides).data).info


def test_every_data_choice_states_its_info(data_dir):
    assert info_of("stsb", data_dir) == DataInfo("stsb")
    assert info_of("afqmc", data_dir) == DataInfo("afqmc", num_labels=2, label_names=("0", "1"))
    tnews = info_of("tnews", data_dir)
    assert tnews.num_labels == 15 and tnews.label_names[:2] == ("100", "101")
    assert info_of("cluener", data_dir) == DataInfo("cluener", entity_types=ENTITY_TYPES, span_extraction=False)
    assert info_of("cmrc2018", data_dir) == DataInfo("cmrc2018", entity_types=("answer",), span_extraction=True)
    assert info_of("c3", data_dir) == DataInfo("c3", num_choices=4, distinct_answers=False)
    assert info_of("chid", data_dir) == DataInfo("chid", num_choices=10, distinct_answers=True)
    assert info_of("chid", data_dir, "data.format=fewclue", "data.distinct_answers=false") == \
        DataInfo("chid", num_choices=7, distinct_answers=False)
    assert info_of("lccc_toy", data_dir) == DataInfo("lccc_toy", max_length=128)
    assert info_of("corpus", data_dir, "data.max_length=48") == DataInfo("corpus", max_length=48)


def test_kinds_say_which_tasks_a_data_choice_serves():
    from hub.config import choices_where, target_class

    def serving(kind):
        return choices_where("data", lambda node: kind in target_class(node).kinds_for(node))

    sts = ["atec", "bq", "lcqmc", "pawsx", "stsb", "stsb_sample"]
    assert serving("pairs") == sts and serving("joint_pairs") == ["afqmc", *sts]   # AFQMC: binary sentence pairs
    assert serving("classification") == ["afqmc", "cmnli", "csl", "iflytek", "ocnli", "tnews", "wsc"]
    assert (serving("spans"), serving("choices"), serving("dialogues")) == (
        ["cluener", "cmrc2018"], ["c3", "chid"], ["lccc", "lccc_toy"])
