"""task=causal_lm on data=documents: rows cut from a token stream, the shifted loss, and evaluation beyond the
training length (data.eval_max_length)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datamodules.documents import rows_of
from hub.config import ConfigError, check_config
from run import build
from tests.conftest import compose_config, results_of, run_cli

CLM = ["task=causal_lm", "data=documents", "loss=lm", "backbone=scratch_tiny", "backbone.position=rope",
       "data.max_length=32", "data.train_limit=200", "data.eval_limit=20", "logger=none"]


def test_rows_are_the_stream_cut_into_equal_lengths_in_document_order():
    rows = rows_of([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4)
    assert [row["input_ids"] for row in rows] == [[1, 2, 3, 4], [5, 6, 7, 8]]   # 9 left over: dropped
    assert all(row["labels"] == row["input_ids"] and row["token_type_ids"] == [0] * 4 for row in rows)


def test_documents_give_train_rows_of_max_length_and_eval_rows_of_eval_max_length(data_dir):
    cfg = compose_config(*CLM, "data.eval_max_length=128", f"paths.data_dir={data_dir}")
    datamodule, _ = build(cfg)
    datamodule.setup("fit")
    train, valid = datamodule.datasets["train"], datamodule.datasets["valid"]
    assert {len(row["input_ids"]) for row in train} == {32} and {len(row["input_ids"]) for row in valid} == {128}
    contexts = datamodule.read_split("valid")
    assert len(contexts) == 20 and len(set(contexts)) == 20 and min(map(len, contexts)) > 100   # CMRC paragraphs
    cls, sep = datamodule.tokenizer.cls_token_id, datamodule.tokenizer.sep_token_id
    stream = [token for row in valid for token in row["input_ids"]]
    assert stream[0] == cls and cls in stream[1:] and sep in stream              # rows run across documents
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["input_ids"].shape[1] == 128 and bool(batch["attention_mask"].all())


def test_the_loss_is_the_cross_entropy_of_each_position_against_the_next_token(data_dir):
    cfg = compose_config(*CLM, f"paths.data_dir={data_dir}")
    datamodule, model = build(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    model.eval()
    out = model.step(batch, "val")
    hidden = model.backbone(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], causal=True)[-1]
    logits = model.head(hidden, model.backbone.encoder.token_embedding.weight)[:, :-1]
    expected = F.cross_entropy(logits.flatten(0, 1), batch["input_ids"][:, 1:].flatten())
    assert torch.allclose(out.loss, expected, atol=1e-5)
    accuracy = model.metrics["val"]["accuracy"]
    accuracy.update(*out.metric_inputs["accuracy"])
    hits = (logits.argmax(-1) == batch["input_ids"][:, 1:]).float().mean()
    assert torch.allclose(accuracy.compute(), hits, atol=1e-6)


def test_a_model_trained_at_length_t_is_tested_at_4t(tmp_path, data_dir):
    run_cli(tmp_path, *CLM, "data.eval_max_length=128", "attention.inference_window=32", "trainer.max_steps=20",
            "data.train_limit=60", f"paths.data_dir={data_dir}")
    result, = results_of(tmp_path)
    assert result["status"] == "completed"
    perplexity = result["test"]["test/perplexity"]
    vocab = 21128
    assert 1 < perplexity < vocab            # a real LM over the bert-base-chinese vocabulary, not uniform
    assert 0 < result["test"]["test/accuracy"] < 1


def test_evaluating_beyond_a_learned_position_table_fails_before_training():
    cfg = compose_config(*CLM, "backbone.position=learned", "backbone.max_position=64", "data.eval_max_length=128")
    with pytest.raises(ConfigError, match=r"data.eval_max_length=128 does not work with backbone.position=learned "
                                          r"and backbone.max_position=64.*use backbone.position=rope"):
        check_config(cfg)


def test_a_document_source_without_a_known_format_is_refused_naming_it(data_dir):
    cfg = compose_config(*CLM, "data.files.valid=[{file: cmrc2018/dev.json, format: xml}]", f"paths.data_dir={data_dir}")
    with pytest.raises(Exception, match=r"data.files.valid: .*cmrc2018/dev.json.* needs a `file` and a `format`, "
                                         r"one of squad\|tsv\|json_lines"):
        build(cfg)
