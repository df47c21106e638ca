"""GlobalPointer (kexue.fm/archives/8373, 8877) on CLUENER and CMRC 2018 (8739): heads, loss, metrics, data."""
import json
import lzma
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datamodules.cluener import ENTITY_TYPES, CLUENERDataModule
from datamodules.cmrc2018 import CMRC2018DataModule, read_cmrc2018, window_starts
from lit_models.components.backbones import VOCAB_DIR
from lit_models.components.heads import (
    NEG,
    EfficientGlobalPointer,
    GlobalPointer,
    mask_spans,
)
from lit_models.components.losses import (
    CrossEntropyLoss,
    MultilabelCategoricalCrossEntropy,
)
from lit_models.components.span_metrics import CMRCScore, EntityF1
from lit_models.global_pointer import GlobalPointerTask, entity_spans
from tests.conftest import results_of, run_cli
from text.cmrc import cmrc_em, cmrc_f1, mixed_segmentation
from text.files import DataFormatError
from text.info import DataInfo

CLUENER_FILES = {"train": "train.json", "valid": "dev.json", "test": "test.json"}
CMRC_FILES = {"train": "train.json", "valid": "dev.json", "test": "test.json"}


def rotation(position: int, dim: int) -> torch.Tensor:
    """RoPE as an explicit matrix R_m: 2×2 rotations by m·θ_k of the pairs (2k, 2k+1), θ_k = 10000^(−2k/d)."""
    matrix = torch.zeros(dim, dim, dtype=torch.float64)
    for k in range(dim // 2):
        angle = position * 10000 ** (-2 * k / dim)
        matrix[2 * k:2 * k + 2, 2 * k:2 * k + 2] = torch.tensor([[math.cos(angle), -math.sin(angle)],
                                                                 [math.sin(angle), math.cos(angle)]])
    return matrix


def loop_scores(span_mask: torch.Tensor, num_types: int, score) -> torch.Tensor:
    """[B, T, L, L] from score(b, α, i, j), NEG where i > j or i, j outside span_mask."""
    batch, length = span_mask.shape
    out = torch.full((batch, num_types, length, length), NEG, dtype=torch.float64)
    for b in range(batch):
        for a in range(num_types):
            for i in range(length):
                for j in range(i, length):
                    if span_mask[b, i] and span_mask[b, j]:
                        out[b, a, i, j] = score(b, a, i, j)
    return out


@pytest.fixture
def hidden_and_mask():
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 16)
    span_mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    return hidden, span_mask


def test_global_pointer_scores_equal_the_formula_per_pair(hidden_and_mask):
    hidden, span_mask = hidden_and_mask
    head = GlobalPointer(16, num_types=3, head_size=8).double()
    torch.nn.init.normal_(head.dense.bias)
    weight = head.dense.weight.view(3, 2, 8, 16)             # [type, q/k, d, H]
    bias = head.dense.bias.view(3, 2, 8)
    h = hidden.double()

    def score(b, a, i, j):  # (R_i q_{i,α})ᵀ (R_j k_{j,α}) / √d
        q = rotation(i, 8) @ (weight[a, 0] @ h[b, i] + bias[a, 0])
        k = rotation(j, 8) @ (weight[a, 1] @ h[b, j] + bias[a, 1])
        return q @ k / math.sqrt(8)

    expected = loop_scores(span_mask, 3, score)
    assert torch.allclose(head(h, span_mask).double(), expected, atol=1e-5)


def test_efficient_global_pointer_scores_equal_the_formula_per_pair(hidden_and_mask):
    hidden, span_mask = hidden_and_mask
    head = EfficientGlobalPointer(16, num_types=3, head_size=8).double()
    torch.nn.init.normal_(head.dense.bias), torch.nn.init.normal_(head.type_dense.bias)
    h = hidden.double()
    u = h @ head.dense.weight.T + head.dense.bias             # [B, L, 2d]: q = even dims, k = odd dims
    w, c = head.type_dense.weight, head.type_dense.bias       # per type: row 2α+1 start term, row 2α end term

    def score(b, a, i, j):  # (R_i q_i)ᵀ(R_j k_j)/√d + (w_start·[q_i;k_i] + w_end·[q_j;k_j]) / 2
        q, k = rotation(i, 8) @ u[b, i, 0::2], rotation(j, 8) @ u[b, j, 1::2]
        return q @ k / math.sqrt(8) + (w[2 * a + 1] @ u[b, i] + c[2 * a + 1] + w[2 * a] @ u[b, j] + c[2 * a]) / 2

    expected = loop_scores(span_mask, 3, score)
    assert torch.allclose(head(h, span_mask).double(), expected, atol=1e-5)
    assert sum(p.numel() for p in head.type_dense.parameters()) == 3 * (4 * 8 + 2)  # 4d + 2 per type


def test_multilabel_ce_equals_its_formula_written_out():
    torch.manual_seed(1)
    scores = torch.randn(2, 3, 4, 4).double()
    targets = torch.rand(2, 3, 4, 4) < 0.2
    scores = scores.masked_fill(torch.ones(4, 4, dtype=torch.bool).tril(-1) & ~targets, NEG)  # masked, never gold
    per_problem = []
    for b in range(2):
        for a in range(3):
            s, y = scores[b, a].flatten().tolist(), targets[b, a].flatten().tolist()
            positive = sum(math.exp(-v) for v, t in zip(s, y) if t)
            negative = sum(math.exp(v) for v, t in zip(s, y) if not t)
            per_problem.append(math.log(1 + positive) + math.log(1 + negative))
    loss = MultilabelCategoricalCrossEntropy()
    assert loss(scores, targets).item() == pytest.approx(sum(per_problem) / 6, rel=1e-6)
    flat = loss(scores.reshape(6, 16), targets.reshape(6, 16))           # [N, C]: one problem per row
    assert flat.item() == pytest.approx(sum(per_problem) / 6, rel=1e-6)


def test_entity_f1_is_exact_match_of_type_and_both_ends():
    metric = EntityF1()
    predicted = torch.tensor([[0, 1, 2, 3], [0, 2, 5, 6], [1, 0, 0, 1], [1, 0, 0, 1]])    # a repeat counts once
    gold = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 2]])
    metric.update(predicted, gold)
    metric.update(torch.zeros(0, 4, dtype=torch.long), torch.tensor([[2, 4, 1, 1]]))
    values = {k: v.item() for k, v in metric.compute().items()}
    assert values == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 2 * 1 / (3 + 3)})


def test_cmrc_segmentation_splits_chinese_by_character_and_keeps_latin_words():
    assert mixed_segmentation("Hello World，我爱NLP 3.14") == ["hello", "world", "，", "我", "爱", "nlp", "3.14"]
    # removed punctuation does not end a run: "ω-force" is one word "ωforce", as in the official script
    assert mixed_segmentation("光荣和ω-force", remove_punctuation=True) == ["光", "荣", "和", "ωforce"]
    # the runs between are nltk.word_tokenize's words, as in the official script
    assert mixed_segmentation("23~28℃") == ["23", "~", "28℃"]
    assert mixed_segmentation("Henry A. Walsh") == ["henry", "a.", "walsh"]


@pytest.mark.parametrize("prediction, references, em, f1", [
    ("《战国无双3》", ["战国无双3"], 1.0, 1.0),                          # punctuation ignored by both
    ("光荣和ω-force开发", ["光荣和ω-force"], 0.0, 2 * (4 / 6) / (4 / 6 + 1)),  # P = 4/6, R = 1
    ("北京上海广州", ["北京广州"], 0.0, 2 * (2 / 6) * (2 / 4) / (2 / 6 + 2 / 4)),  # common *substring*: 2
    ("the Beatles", ["The Beatles band", "披头士"], 0.0, 0.8),           # P = 1, R = 2/3; best reference
    ("披头士", ["The Beatles band", "披头士乐队", " 披头士 "], 1.0, 1.0),  # any reference, stripped
    ("好…", ["好"], 0.0, 2 * (1 / 2) / (1 / 2 + 1)),                    # "……" in the list never matches "…"
    ("", ["北京"], 0.0, 0.0),
    ("23~28", ["23~28℃"], 0.0, 0.0),            # nltk keeps "2328℃" one word: no common segment
    ("Henry Walsh", ["Henry A. Walsh"], 0.0, 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)),  # henry | a. | walsh
])
def test_cmrc_em_and_f1_on_hand_computed_cases(prediction, references, em, f1):
    assert cmrc_em(prediction, references) == em
    assert cmrc_f1(prediction, references) == pytest.approx(f1)


def test_cmrc_score_averages_over_questions():
    metric = CMRCScore()
    metric.update(["北京上海广州", "《战国无双3》"], [["北京广州"], ["战国无双3"]])
    values = {k: v.item() for k, v in metric.compute().items()}
    assert values == pytest.approx({"em": 0.5, "f1": (0.4 + 1.0) / 2})


def build_task(loss, span_extraction: bool, max_answer_tokens=64):
    from lit_models.components.backbones import ScratchBackbone
    from lit_models.components.init import bert

    backbone = ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, max_position=64)
    types = ["answer"] if span_extraction else list(ENTITY_TYPES)
    return GlobalPointerTask(backbone=backbone, loss=loss, init=bert, optimizer=None, scheduler=None,
                             monitor="val/f1", data=DataInfo("test", entity_types=tuple(types),
                                                             span_extraction=span_extraction),
                             max_answer_tokens=max_answer_tokens, head_size=8)


def test_cross_entropy_trains_one_span_per_window_and_only_for_span_extraction():
    task = build_task(CrossEntropyLoss(), span_extraction=True)
    torch.manual_seed(2)
    scores = mask_spans(torch.randn(2, 1, 5, 5), torch.ones(2, 5, dtype=torch.bool))
    labels = torch.tensor([[0, 0], [1, 3]])
    expected = F.cross_entropy(scores[:, 0].reshape(2, 25), torch.tensor([0, 1 * 5 + 3]))
    assert task.loss_of(scores, labels).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="loss=multilabel_ce"):
        build_task(CrossEntropyLoss(), span_extraction=False)


def test_cmrc_answer_is_the_best_span_over_the_windows_of_its_question():
    task = build_task(MultilabelCategoricalCrossEntropy(), span_extraction=True, max_answer_tokens=2)
    context = "abcdefgh"
    offsets = torch.full((3, 6, 2), -1)
    offsets[0, 2:6] = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]])   # window 1: "abcd"
    offsets[1, 2:6] = torch.tensor([[2, 3], [3, 4], [4, 6], [6, 8]])   # window 2: "c d ef gh"
    offsets[2, 2:4] = torch.tensor([[0, 1], [1, 2]])                   # question 2, one window: "ab"
    span_mask = offsets[..., 0] >= 0
    span_mask[:, 0] = True
    scores = torch.full((3, 1, 6, 6), -5.0)
    scores[:, 0, 0, 0] = 99.0                  # [CLS] never answers
    scores[0, 0, 2, 3] = 3.0                   # "ab", score 3
    scores[1, 0, 3, 4] = 4.0                   # "def" (tokens 3..4), the best of question 1
    scores[1, 0, 2, 5] = 9.0                   # 4 tokens: longer than max_answer_tokens = 2
    scores[2, 0, 3, 3] = -1.0                  # "b": the best of question 2, even if negative
    batch = {"span_mask": span_mask, "offsets": offsets, "question": torch.tensor([0, 0, 1]),
             "index": torch.tensor([7, 8])}
    answers = task.question_answers(batch, mask_spans(scores, span_mask))
    assert [context[start:end] for start, end, _ in answers] == ["def", "b"]
    assert [score for _, _, score in answers] == [4.0, -1.0]


def test_a_malformed_cluener_line_names_file_and_line(tmp_path):
    good = {"text": "彭小军认为", "label": {"name": {"彭小军": [[0, 2]]}}}
    bad = {"text": "温格的球队", "label": {"name": {"温格": [[0, 2]]}}}
    path = tmp_path / "dev.json"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in (good, good, bad)) + "\n", encoding="utf-8")
    dm = CLUENERDataModule("cluener", str(tmp_path), {"valid": "dev.json"}, "src")
    with pytest.raises(DataFormatError, match=r"dev\.json:3: name span \[0, 2\] is '温格的' in the text, not '温格'"):
        dm.read_split("valid")


def test_a_cmrc_answer_not_in_its_context_names_file_and_line(tmp_path):
    qa = {"id": "Q1", "question": "谁？", "answers": [{"text": "上海", "answer_start": 0}]}
    data = {"data": [{"paragraphs": [{"id": "P", "context": "北京是首都", "qas": [qa]}]}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if '"Q1"' in text)
    with pytest.raises(DataFormatError, match=rf"train\.json:{line}: question 'Q1': the first answer '上海'"):
        read_cmrc2018(path, labelled=True)


def test_split_sizes_match_the_sources(data_dir):
    cluener = CLUENERDataModule("cluener", str(data_dir / "cluener"), CLUENER_FILES, "src")
    assert {s: len(cluener.read_split(s)) for s in CLUENER_FILES} == {"train": 10748, "valid": 1343, "test": 1345}
    assert sum(len(e["entities"]) for e in cluener.read_split("valid")) == 3072
    cmrc = CMRC2018DataModule("cmrc2018", str(data_dir / "cmrc2018"), CMRC_FILES, "src")
    assert {s: len(cmrc.read_split(s)) for s in CMRC_FILES} == {"train": 10142, "valid": 3219, "test": 2000}
    assert cmrc.answer_counts["valid"] == {"realigned": 7, "not_in_context": 193}
    assert cmrc.answer_counts["train"] == {"realigned": 21, "not_in_context": 0}
    assert [len(q["answers"]) for q in cmrc.read_split("valid")] == [3] * 3219


def tokenizer_of(name: str, e5_dir=None):
    from transformers import AutoTokenizer, BertTokenizer

    if name == "bert":
        return BertTokenizer.from_pretrained(str(VOCAB_DIR / "bert-base-chinese")), ""
    return AutoTokenizer.from_pretrained(str(e5_dir)), "query: "


@pytest.mark.parametrize("tokenizer, unmapped", [("bert", 4), ("e5", 182)])
def test_gold_cluener_entities_round_trip_through_tokens_and_decoding(data_dir, request, tokenizer, unmapped):
    """Scores +1 on the gold token spans, −1 elsewhere: decoding gives back every gold entity that has a token
    span, exactly (precision 1); the others, a boundary inside a token, are counted and missed."""
    e5_dir = request.getfixturevalue("e5_dir") if tokenizer == "e5" else None
    dm = CLUENERDataModule("cluener", str(data_dir / "cluener"), CLUENER_FILES, "src", cache_dir=None)
    dm.set_tokenizer(*tokenizer_of(tokenizer, e5_dir))
    dataset, metric = dm.dataset("valid"), EntityF1()
    for start in range(0, len(dataset), 128):
        batch = dm.collate([dataset[i] for i in range(start, min(start + 128, len(dataset)))])
        scores = mask_spans(batch["labels"].float() * 2 - 1, batch["span_mask"])
        metric.update(entity_spans(scores, batch["offsets"]), batch["gold_spans"])
    assert dm.unmapped["valid"] == unmapped
    assert metric.gold.item() == 3072 and metric.predicted.item() == 3072 - unmapped
    values = {k: v.item() for k, v in metric.compute().items()}
    assert values["precision"] == 1.0 and values["recall"] == pytest.approx((3072 - unmapped) / 3072)


@pytest.mark.parametrize("tokenizer, inexact", [("bert", 1), ("e5", 219)])
def test_every_cmrc_dev_answer_is_labelled_in_a_window(data_dir, request, tokenizer, inexact):
    """Windows 128 tokens apart cover each context; the first reference of every dev question lies inside some
    window's label span, and decodes to exactly its text except where a token juts out of it (e.g. "34个" for
    "4个" with bert-base-chinese's token "34")."""
    e5_dir = request.getfixturevalue("e5_dir") if tokenizer == "e5" else None
    dm = CMRC2018DataModule("cmrc2018", str(data_dir / "cmrc2018"), CMRC_FILES, "src", cache_dir=None)
    dm.set_tokenizer(*tokenizer_of(tokenizer, e5_dir))
    dataset = dm.dataset("valid")
    labelled = exact = 0
    for k in range(len(dataset)):
        item, (text, _) = dataset[k], dataset.questions[k]["answers"][0]
        decoded = {item["context"][w["offsets"][i][0]:w["offsets"][j][1]]
                   for w in item["windows"] for i, j in [w["label"]] if (i, j) != (0, 0)}
        labelled += bool(decoded)
        exact += decoded == {text}
        assert all(len(w["input_ids"]) <= 512 for w in item["windows"])
    assert labelled == 3219 and exact == 3219 - inexact


def test_windows_step_by_doc_stride_and_reach_the_end():
    assert window_starts(1000, capacity=490, doc_stride=128) == [0, 128, 256, 384, 512]   # 512 + 490 ≥ 1000
    assert window_starts(1000, capacity=480, doc_stride=128)[-1] == 640                    # 512 + 480 < 1000
    assert window_starts(480, capacity=480, doc_stride=128) == [0]


def test_cluener_submission_has_one_line_per_test_id_and_dev_lines_keep_the_gold(data_dir, tmp_path):
    dm = CLUENERDataModule("cluener", str(data_dir / "cluener"), CLUENER_FILES, "src")
    test, dev = dm.read_split("test"), dm.read_split("valid")
    predictions = [{"index": i, "entities": [[6, 0, 1]] if i == 1 else []} for i in range(len(test))]
    [path] = dm.write_predictions("test", predictions + predictions[:3], tmp_path)   # DDP padding repeats
    lines = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert path == tmp_path / "cluener_predict.json" and [r["id"] for r in lines] == list(range(1345))
    assert lines[1] == {"id": 1, "label": {"name": {test[1]["text"][:2]: [[0, 1]]}}}
    assert all(r["label"] == {} for r in lines[2:])
    gold = [{"index": i, "entities": [list(e) for e in example["entities"]]} for i, example in enumerate(dev)]
    [dev_path] = dm.write_predictions("valid", gold, tmp_path)
    with lzma.open(data_dir / "cluener" / "dev.json.xz", "rt", encoding="utf-8") as f:
        raw = [{kind: {entity: sorted(spans) for entity, spans in entities.items()}
                for kind, entities in json.loads(line)["label"].items()} for line in f]
    lines = [json.loads(line) for line in open(dev_path, encoding="utf-8")]
    assert dev_path == tmp_path / "dev" / "cluener_predict.json"
    assert [r["label"] for r in lines] == [r["gold"] for r in lines] == raw
    with pytest.raises(ValueError, match="no prediction for 1 examples"):
        dm.write_predictions("test", predictions[1:], tmp_path)


@pytest.mark.slow
def test_training_scratch_tiny_on_cluener_then_predict_the_test_set(tmp_path, data_dir):
    """A short run (scratch_tiny, 4000 texts, 2 epochs = 250 steps) learns entities: val F1 on 300 dev texts
    above a measured floor (0.28 at 250 steps, 0.43 at 375; 0.14 at 125). Then predict=true writes the
    submission file, one line per test id, with spans that match their text."""
    valid = tmp_path / "dev300.json"
    with lzma.open(data_dir / "cluener" / "dev.json.xz", "rt", encoding="utf-8") as f:
        valid.write_text("".join(f.readlines()[:300]), encoding="utf-8")
    run_cli(tmp_path, "task=global_pointer", "data=cluener", "loss=multilabel_ce", "backbone=scratch_tiny",
            "trainer=cpu", "logger=csv", "scheduler=constant", f"paths.data_dir={data_dir}", "data.train_limit=4000",
            "trainer.max_epochs=2", f"data.files.valid={valid}", "data.eval_batch_size=256", "predict=true")
    [results] = results_of(tmp_path)
    assert results["best"]["metric"] == "val/f1" and results["best"]["value"] > TRAINED_F1_FLOOR
    [submission] = [p for p in results["predictions"] if p.endswith("predictions/cluener_predict.json")]
    lines = [json.loads(line) for line in open(submission, encoding="utf-8")]
    with lzma.open(data_dir / "cluener" / "test.json.xz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    assert [r["id"] for r in lines] == list(range(1345)) and any(r["label"] for r in lines)
    for record, text in zip(lines, texts):
        assert set(record["label"]) <= set(ENTITY_TYPES)
        assert all(text[s:e + 1] == entity for entities in record["label"].values()
                   for entity, spans in entities.items() for s, e in spans)


def test_cmrc2018_run_logs_the_official_scores_of_the_predictions_it_writes(tmp_path, data_dir):
    """One short epoch; validation's val/f1 equals the mean official F1 of the dev predictions that
    predict=true writes from the same checkpoint, and every answer is a piece of its context."""
    with lzma.open(data_dir / "cmrc2018" / "dev.json.xz", "rt", encoding="utf-8") as f:
        dev = json.load(f)
    dev["data"] = dev["data"][:10]
    small = tmp_path / "dev10.json"
    small.write_text(json.dumps(dev, ensure_ascii=False), encoding="utf-8")
    run_cli(tmp_path, "task=global_pointer", "data=cmrc2018", "loss=multilabel_ce", "backbone=scratch_tiny",
            "trainer=cpu", "logger=csv", f"paths.data_dir={data_dir}", "data.train_limit=64", "data.max_length=256",
            "trainer.max_epochs=1", f"data.files.valid={small}", f"data.files.test={small}", "predict=true")
    [results] = results_of(tmp_path)
    folder = Path(results["output_dir"]) / "predictions"
    answers = json.loads((folder / "cmrc2018_predict.json").read_text(encoding="utf-8"))
    qas = {qa["id"]: (p["context"], [a["text"] for a in qa["answers"]])
           for article in dev["data"] for p in article["paragraphs"] for qa in p["qas"]}
    assert list(answers) == list(qas) and len(answers) == 37
    assert all(answer and answer in qas[qid][0] for qid, answer in answers.items())
    assert json.loads((folder / "dev" / "cmrc2018_predict.json").read_text(encoding="utf-8")) == answers
    assert results["best"]["metric"] == "val/f1"
    official_f1 = sum(cmrc_f1(answer, qas[qid][1]) for qid, answer in answers.items()) / 37
    assert results["best"]["value"] == pytest.approx(official_f1, abs=1e-6)


TRAINED_F1_FLOOR = 0.2
