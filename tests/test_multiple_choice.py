"""task=multiple_choice on C3 and CHID (kexue.fm/archives/8739): data, option sequences, the blank marker,
the Hungarian assignment, and runs through run.py whose accuracy is recounted from the prediction files."""
import itertools
import json
import lzma

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from datamodules.multiple_choice import read_c3, vocabulary_token
from lit_models.components.backbones import VOCAB_DIR
from lit_models.multiple_choice import AssignedAccuracy
from tests.conftest import compose_config, results_of, run_cli
from text.choices import assign_distinct, choose_options
from text.files import DataFormatError, MissingSplitError
from text.info import DataInfo

# SOURCES.md: C3 d/m questions per split; FewCLUE chid records per file.
C3_SIZES = {"train": 5856 + 6013, "valid": 1825 + 1991, "test": 1890 + 2002}
FEWCLUE_CHID_SIZES = {"train": 202, "valid": 202, "test": 2002, "submission": 2000}


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import BertTokenizer
    return BertTokenizer.from_pretrained(str(VOCAB_DIR / "bert-base-chinese"))


def datamodule(data_dir, name, *overrides, tokenizer=None):
    dm = instantiate(compose_config(f"data={name}", f"paths.data_dir={data_dir}", "data.cache_dir=null",
                                    *overrides).data)
    if tokenizer is not None:
        dm.set_tokenizer(tokenizer)
    return dm


def fewclue_rows(data_dir, file="dev_few_all.json"):
    with lzma.open(data_dir / "fewclue" / "chid" / f"{file}.xz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_split_sizes_match_the_sources(data_dir):
    c3 = datamodule(data_dir, "c3")
    assert {split: len(c3.read_split(split)) for split in C3_SIZES} == C3_SIZES
    assert c3.info == DataInfo("c3", num_choices=4) and c3.test_labelled
    chid = datamodule(data_dir, "chid", "data.format=fewclue")
    assert {split: len(chid.read_split(split)) for split in FEWCLUE_CHID_SIZES} == FEWCLUE_CHID_SIZES
    assert chid.info == DataInfo("chid", num_choices=7, distinct_answers=True) and chid.test_labelled
    assert {b.answer for b in chid.read_split("submission")} == {-1}       # test.json: the unlabelled leaderboard set
    assert chid.prediction_splits == ("valid", "test", "submission") and chid.leaderboard_split == "submission"


def test_official_chid_is_not_staged_and_the_error_names_its_files(data_dir):
    dm = datamodule(data_dir, "chid")
    assert dm.info == DataInfo("chid", num_choices=10, distinct_answers=True) and not dm.test_labelled
    with pytest.raises(MissingSplitError) as error:
        dm.require(["train"])
    for name in (data_dir / "chid" / "train.json", data_dir / "chid" / "train_answer.json.xz", "chid_public.zip"):
        assert str(name) in str(error.value)


def test_a_c3_question_becomes_one_sequence_per_option_and_absent_options_are_masked(data_dir, bert_tokenizer):
    dm = datamodule(data_dir, "c3", "data.max_length=48", tokenizer=bert_tokenizer)
    questions = dm.read_split("valid")
    two = next(i for i, q in enumerate(questions) if len(q.options) == 2)   # an m-dev 正确/错误 question
    four = next(i for i, q in enumerate(questions) if len(q.options) == 4)
    dataset = dm.dataset("valid")
    sequences, label, index, group = dataset[two]
    q = questions[two]
    assert len(sequences) == 2 and (label, index, group) == (q.answer, two, two)
    question_ids = bert_tokenizer(q.question, add_special_tokens=False)["input_ids"]
    passage_ids = bert_tokenizer(q.passage, add_special_tokens=False)["input_ids"]
    for sequence, option in zip(sequences, q.options):
        option_ids = bert_tokenizer(option, add_special_tokens=False)["input_ids"]
        tail = [102] + question_ids + [102] + option_ids + [102]                  # [SEP] question [SEP] option [SEP]
        assert len(sequence) == 48 and sequence[-len(tail):] == tail             # long passage cut, the rest whole
        assert sequence[:-len(tail)] == [101] + passage_ids[:48 - 1 - len(tail)]  # [CLS] + the passage's start
    batch = dm.collate([dataset[two], dataset[four]])
    assert batch["choice_mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].tolist() == [q.answer, questions[four].answer]
    assert torch.equal(batch["input_ids"][0, :48], torch.tensor(sequences[0]))


def official_chid_line(rows, first_key: int):
    """An official-layout line from three real FewCLUE rows: the first passage keeps one blank, the second
    joins two rows' passages (two blanks); the 10 candidates are the first row's 7 and three others, so the
    three answers are distinct. Blanks are numbered from `first_key`."""
    first, second, third = rows
    extra = [r["candidates"][r["answer"]] for r in (second, third)]
    filler = next(c for c in second["candidates"] if c not in first["candidates"] + extra)
    keys = [f"#idiom{first_key + i:06d}#" for i in range(3)]
    content = [first["content"].replace("#idiom#", keys[0]),
               second["content"].replace("#idiom#", keys[1]) + third["content"].replace("#idiom#", keys[2])]
    record = {"candidates": first["candidates"] + extra + [filler], "content": content}
    return record, dict(zip(keys, (first["answer"], 7, 8)))


def write_official_chid(folder, rows, lines: int) -> None:
    """chid/{train,dev}.json and their answer files, `lines` lines each, from consecutive real rows."""
    usable = [rows[i:i + 3] for i in range(0, len(rows) - 2, 3)
              if len({r["candidates"][r["answer"]] for r in rows[i + 1:i + 3]} - set(rows[i]["candidates"])) == 2]
    folder.mkdir(parents=True)
    for split, groups in (("train", usable[:lines]), ("dev", usable[lines:2 * lines])):
        made = [official_chid_line(g, 3 * n) for n, g in enumerate(groups)]
        (folder / f"{split}.json").write_text("".join(json.dumps(m[0], ensure_ascii=False) + "\n" for m in made))
        (folder / f"{split}_answer.json").write_text(json.dumps({k: v for m in made for k, v in m[1].items()}))


def test_chid_blank_becomes_the_marker_and_other_blanks_four_masks(data_dir, bert_tokenizer, tmp_path):
    rows = fewclue_rows(data_dir)
    write_official_chid(tmp_path / "chid", rows, lines=2)
    dm = datamodule(data_dir, "chid", f"data.layouts.clue.root={tmp_path / 'chid'}", "data.max_length=512",
                    tokenizer=bert_tokenizer)
    blanks, dataset = dm.read_split("valid"), dm.dataset("valid")
    assert [(b.key, b.group, b.position) for b in blanks] == [
        ("#idiom000000#", 0, 0), ("#idiom000001#", 0, 0), ("#idiom000002#", 0, 1),
        ("#idiom000003#", 1, 0), ("#idiom000004#", 1, 0), ("#idiom000005#", 1, 1)]
    assert [b.answer for b in blanks][1:3] == [7, 8] and dataset[1][1:] == (7, 1, 0)
    marker, mask = bert_tokenizer.convert_tokens_to_ids(["[unused1]", "[MASK]"])
    pieces = [bert_tokenizer(t, add_special_tokens=False)["input_ids"] for t in blanks[1].pieces]
    assert len(pieces) == 3 and blanks[2].pieces == blanks[1].pieces     # one passage, two blanks
    for which, (first_gap, second_gap) in ((1, ([marker], [mask] * 4)), (2, ([mask] * 4, [marker]))):
        sequences = dataset[which][0]
        assert len(sequences) == 10
        for candidate, sequence in zip(blanks[which].candidates, sequences):
            idiom = bert_tokenizer(candidate, add_special_tokens=False)["input_ids"]
            assert sequence == ([101] + idiom + [102] + pieces[0] + first_gap + pieces[1] + second_gap + pieces[2]
                                + [102])


@pytest.mark.parametrize("row, kept_left, kept_right", [(0, 6, 50), (1, 38, 18), (7, 28, 28)])
def test_chid_context_is_cut_around_the_blank_on_real_rows(data_dir, bert_tokenizer, row, kept_left, kept_right):
    """max_length 64 leaves 56 context tokens ([CLS] idiom [SEP] … [SEP], the marker): half each side, and
    what a short side leaves goes to the other (left/right of rows 0, 1, 7: 6/101, 91/18, 51/58 tokens)."""
    dm = datamodule(data_dir, "chid", "data.format=fewclue", "data.max_length=64", tokenizer=bert_tokenizer)
    record, blank = fewclue_rows(data_dir)[row], dm.read_split("valid")[row]
    assert (blank.key, blank.answer, blank.candidates) == (record["id"], record["answer"], record["candidates"])
    sequences, label, _, _ = dm.dataset("valid")[row]
    marker = bert_tokenizer.convert_tokens_to_ids("[unused1]")
    left, right = (bert_tokenizer(t, add_special_tokens=False)["input_ids"] for t in record["content"].split("#idiom#"))
    assert len(sequences) == 7 and label == record["answer"]
    for candidate, sequence in zip(record["candidates"], sequences):
        idiom = bert_tokenizer(candidate, add_special_tokens=False)["input_ids"]
        assert sequence == [101] + idiom + [102] + left[len(left) - kept_left:] + [marker] + right[:kept_right] + [102]
        assert len(sequence) == 64


def test_the_marker_is_one_vocabulary_token_of_both_backbones(bert_tokenizer, e5_dir):
    from transformers import AutoTokenizer
    e5 = AutoTokenizer.from_pretrained(str(e5_dir))
    assert vocabulary_token(bert_tokenizer, ["[unused1]", "※"]) == bert_tokenizer.convert_tokens_to_ids("[unused1]") == 1  # vocab.txt line 2
    assert vocabulary_token(e5, ["[unused1]", "※"]) == e5.convert_tokens_to_ids("※") != e5.unk_token_id
    with pytest.raises(ValueError, match=r"none of data.blank_marker=\['\[unused1\]'\]"):
        vocabulary_token(e5, ["[unused1]"])


def test_a_malformed_fewclue_line_names_file_and_line(data_dir, tmp_path):
    good = json.dumps(fewclue_rows(data_dir)[0], ensure_ascii=False)
    folder = tmp_path / "fewclue" / "chid"
    folder.mkdir(parents=True)
    (folder / "dev_few_all.json").write_text(good + "\n" + good.replace("#idiom#", "") + "\n")
    dm = datamodule(tmp_path, "chid", "data.format=fewclue")
    with pytest.raises(DataFormatError, match=rf"{folder / 'dev_few_all.json'}:2: .*one #idiom# blank"):
        dm.read_split("valid")


def test_a_c3_answer_outside_its_options_names_file_document_and_question(tmp_path):
    documents = [[["男：你好。"], [{"question": "他说什么?", "choice": ["你好", "再见"], "answer": "再见"}], "1-1"],
                 [["女：谢谢。"], [{"question": "她说什么?", "choice": ["谢谢", "不客气"], "answer": "谢谢"},
                                  {"question": "她是谁?", "choice": ["老师", "学生"], "answer": "学生"}], "1-2"]]
    path = tmp_path / "c3-d-dev.json"
    path.write_text(json.dumps(documents, ensure_ascii=False))
    questions = read_c3(path, labelled=True, first_number=10)
    assert [(q.id, q.passage, q.answer) for q in questions] == [(10, "男：你好。", 1), (11, "女：谢谢。", 0),
                                                                (12, "女：谢谢。", 1)]
    documents[1][1][1]["answer"] = "医生"
    path.write_text(json.dumps(documents, ensure_ascii=False))
    with pytest.raises(DataFormatError, match=rf"{path}: document 1 question 1: answer '医生' is not among"):
        read_c3(path, labelled=True)


# Three blanks share four candidates; every blank's argmax is candidate 0.
LOG_PROBS = np.log(np.array([[0.70, 0.20, 0.05, 0.05],
                             [0.60, 0.10, 0.25, 0.05],
                             [0.50, 0.30, 0.10, 0.10]]))


def test_hungarian_gives_distinct_idioms_with_the_best_total():
    assert LOG_PROBS.argmax(1).tolist() == [0, 0, 0]
    choices = assign_distinct(LOG_PROBS)
    best = max(itertools.permutations(range(4), 3), key=lambda p: sum(LOG_PROBS[i, c] for i, c in enumerate(p)))
    assert choices.tolist() == list(best) == [0, 2, 1]
    assert sum(LOG_PROBS[i, c] for i, c in enumerate(choices)) == pytest.approx(np.log(0.7 * 0.25 * 0.3))
    # groups: the three blanks of group 5 are assigned together; group 2's single blank keeps its argmax
    log_probs = torch.tensor(np.vstack([LOG_PROBS[:1], LOG_PROBS]), dtype=torch.float32)
    groups = torch.tensor([2, 5, 5, 5])
    assert choose_options(log_probs, groups, distinct=True).tolist() == [0, 0, 2, 1]
    assert choose_options(log_probs, groups, distinct=False).tolist() == [0, 0, 0, 0]


def test_assigned_accuracy_decides_groups_across_batches_and_counts_a_repeat_once():
    metric = AssignedAccuracy()
    log_probs = torch.tensor(LOG_PROBS, dtype=torch.float32)
    labels = torch.tensor([0, 2, 3])    # the assignment [0, 2, 1] gets 2 of 3 right; the argmax [0, 0, 0] 1 of 3
    metric.update(log_probs[:2], labels[:2], torch.tensor([0, 1]), torch.tensor([7, 7]))
    metric.update(log_probs[2:], labels[2:], torch.tensor([2]), torch.tensor([7]))
    metric.update(log_probs[:1], labels[:1], torch.tensor([0]), torch.tensor([7]))   # a sampler's padding
    assert metric.compute().item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("hungarian, expected", [(True, [0, 2, 1]), (False, [0, 0, 0])])
def test_chid_test_predictions_are_the_leaderboard_object_decided_per_line(data_dir, tmp_path, hungarian, expected):
    folder = tmp_path / "chid"
    write_official_chid(folder, fewclue_rows(data_dir), lines=1)
    (folder / "test1.1.json").write_text((folder / "dev.json").read_text())   # CLUE's test: no answer file
    dm = datamodule(data_dir, "chid", f"data.layouts.clue.root={folder}")
    log_probs = np.full((3, 10), -20.0)
    log_probs[:, :4] = LOG_PROBS
    predictions = [{"index": i, "group": 0, "log_probs": row.tolist(), "hungarian": hungarian}
                   for i, row in enumerate(log_probs)]
    written = dm.write_predictions("test", predictions + predictions[:1], tmp_path / "predictions")
    assert written == [tmp_path / "predictions" / "chid11_predict.json"]
    assert json.loads(written[0].read_text()) == {f"#idiom{i:06d}#": c for i, c in enumerate(expected)}


def test_c3_run_writes_one_prediction_per_test_question_and_its_accuracy_recounts(tmp_path, data_dir):
    run_cli(tmp_path, "task=multiple_choice", "data=c3", "loss=cross_entropy", f"paths.data_dir={data_dir}",
            "trainer=cpu", "logger=csv", "trainer.max_epochs=1", "data.train_limit=24", "data.eval_limit=40",
            "data.max_length=48", "data.batch_size=8", "predict=true")
    [results] = results_of(tmp_path)
    folder = tmp_path / "outputs" / "runs"
    [test_file] = folder.rglob("predictions/c311_predict.json")
    test_rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    assert [sorted(r) for r in test_rows] == [["id", "label"]] * 40 and [r["id"] for r in test_rows] == list(range(40))
    assert {r["label"] for r in test_rows} <= {0, 1, 2, 3}
    dev_rows = [json.loads(line) for line in (test_file.parent / "dev" / "c311_predict.json").read_text().splitlines()]
    hand = sum(r["label"] == r["gold"] for r in dev_rows) / len(dev_rows)
    assert len(dev_rows) == 40 and results["best"]["metric"] == "val/accuracy"
    assert results["best"]["value"] == pytest.approx(hand, abs=1e-6)
    assert results["throughput"]["train_examples"] == 24 and set(results["test"]) == {"test/accuracy", "test/loss"}


def test_official_chid_run_assigns_distinct_idioms_and_its_accuracy_recounts(tmp_path, data_dir):
    write_official_chid(tmp_path / "data" / "chid", fewclue_rows(data_dir, "test_public.json"), lines=6)
    run_cli(tmp_path, "task=multiple_choice", "data=chid", "loss=cross_entropy",
            f"data.layouts.clue.root={tmp_path / 'data' / 'chid'}", "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
            "data.batch_size=4", "predict=true")
    [results] = results_of(tmp_path)
    [dev] = (tmp_path / "outputs" / "runs").rglob("predictions/dev")
    predicted = json.loads((dev / "chid11_predict.json").read_text())
    gold = json.loads((dev / "chid11_answer.json").read_text())
    assert len(predicted) == 18 and predicted.keys() == gold.keys()
    hand = sum(predicted[k] == gold[k] for k in gold) / len(gold)
    assert results["best"]["value"] == pytest.approx(hand, abs=1e-6)
    for line in range(6):   # every line's three blanks got three different candidates
        assert len({predicted[f"#idiom{3 * line + i:06d}#"] for i in range(3)}) == 3
    assert "val/accuracy_independent" in results["final_validation"]
