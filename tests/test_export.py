"""python -m hub.export: the exported folders compute what the hub computes (sentence-transformers embeddings,
with the run's pooling, prefix and whitening; HF sequence-classification logits and label map), and bad input
fails with one line naming the problem."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from hub.config import PROJECT_ROOT
from hub.export import main
from run import build
from tests.conftest import compose_config, results_of, run_cli
from text.tokens import tokenize

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["trainer=cpu", "logger=none", "trainer.max_epochs=1", "~callbacks.last_checkpoint"]


def run_folder(tmp_path: Path, *overrides: str, env: dict | None = None) -> Path:
    run_cli(tmp_path, *overrides, env=env)
    [results] = results_of(tmp_path)
    assert results["status"] == "completed"
    return Path(results["output_dir"])


def written_run(folder: Path, *overrides: str) -> Path:
    """A run folder as run.py leaves it before training: .hydra/config.yaml of the composed overrides."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config(*overrides, output_dir=str(folder)), folder / ".hydra" / "config.yaml")
    return folder


def hub_model(folder: Path, eval_limit: int = 16):
    """The run's DataModule and task module the hub's way (run.build), with best.ckpt's weights when trained."""
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    cfg.paths.output_dir, cfg.data.eval_limit, cfg.data.cache_dir = str(folder), eval_limit, None
    datamodule, model = build(cfg)
    best = folder / "checkpoints" / "best.ckpt"
    if best.is_file():
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return datamodule, model.eval()


def hub_embeddings(folder: Path) -> tuple[list[str], torch.Tensor]:
    """16 test pairs' sentences and their vectors as the hub's evaluation embeds them (BiEncoder.embed)."""
    datamodule, model = hub_model(folder)
    batch = next(iter(datamodule.loader("test")))
    with torch.no_grad():
        vectors = model.embed(batch["input_ids"], batch["attention_mask"])
    pairs = datamodule.read_split("test")
    return list(pairs.first) + list(pairs.second), vectors


def exported(source: Path, out: Path, *options: str) -> Path:
    assert main([str(source), str(out), *options]) == 0
    return out


def st_embeddings(out: Path, texts: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True, batch_size=8)


def tiny_bert(folder: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer BERT with a random (non-zero) pooler over e5-small-zh's tokenizer: e5's own pooler is all zeros,
    so the pooler paths need another model."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tokenizer_dir, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bi_encoder_run(tmp_path_factory, e5_dir) -> Path:
    return run_folder(tmp_path_factory.mktemp("bi_encoder"), "backbone=pretrained", f"backbone.name_or_path={e5_dir}",
                      *TINY, "data.train_limit=32", "data.eval_limit=16")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, e5_dir) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"), e5_dir)


# --- sentence-transformers ---------------------------------------------------------------------------------

def test_trained_bi_encoder_gives_the_hubs_embeddings(bi_encoder_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = exported(bi_encoder_run, tmp_path / "st")
    texts, hub = hub_embeddings(bi_encoder_run)
    model = SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 64 and model.prompts["query"] == "query: " and model.default_prompt_name == "query"
    assert model.similarity_fn_name == "cosine"
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), hub, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.encode_document(texts, convert_to_tensor=True), hub, rtol=0, atol=1e-5)
    long = "这是一个很长的句子" * 20   # past max_seq_length: both cut "query: " + text at 64 tokens
    _, hub_model_ = hub_model(bi_encoder_run)
    ids = torch.tensor(tokenize(hub_model_.backbone.tokenizer, [long], 64, "query: "))
    assert ids.shape == (1, 64)
    with torch.no_grad():
        hub_long = hub_model_.embed(ids, torch.ones_like(ids))
    torch.testing.assert_close(model.encode([long], convert_to_tensor=True), hub_long, rtol=0, atol=1e-5)
    assert "checkpoints/best.ckpt" in (out / "README.md").read_text()


def test_zero_shot_e5_first_last_avg_gives_the_hubs_embeddings(tmp_path, e5_dir):
    """train=false: no checkpoint, the pretrained weights rebuilt from the run's config; first_last_avg is
    WeightedLayerPooling (layers 1 and L) then mean."""
    folder = run_folder(tmp_path / "run", "backbone=pretrained", f"backbone.name_or_path={e5_dir}", "train=false",
                        "test=false", "task.pooling=first_last_avg", "logger=none", "trainer=cpu")
    out = exported(folder, tmp_path / "st")
    texts, hub = hub_embeddings(folder)
    torch.testing.assert_close(st_embeddings(out, texts), hub, rtol=0, atol=1e-5)


def test_pooler_pooling_exports_as_cls_then_a_tanh_dense(tmp_path, tiny_bert_dir):
    folder = written_run(tmp_path / "run", "backbone=pretrained", f"backbone.name_or_path={tiny_bert_dir}",
                         "train=false", "task.pooling=pooler")
    out = exported(folder, tmp_path / "st")
    assert (out / "2_Dense" / "config.json").is_file()
    texts, hub = hub_embeddings(folder)
    torch.testing.assert_close(st_embeddings(out, texts), hub, rtol=0, atol=1e-5)


def test_whitening_is_a_dense_layer_computing_x_minus_mean_times_kernel(bi_encoder_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(bi_encoder_run, folder, copy_function=os.link)   # hard links: the checkpoint is 0.4 GB
    generator = torch.Generator().manual_seed(0)
    mean, kernel = torch.randn(384, generator=generator), torch.randn(384, 16, generator=generator) / 384 ** 0.5
    save_file({"mean": mean, "kernel": kernel}, str(folder / "whitening.safetensors"))
    out = exported(folder, tmp_path / "st")
    texts, hub = hub_embeddings(folder)
    expected = ((hub.double() - mean.double()) @ kernel.double()).float()
    torch.testing.assert_close(st_embeddings(out, texts), expected, rtol=0, atol=1e-5)
    assert main([str(folder / "checkpoints" / "best.ckpt"), str(tmp_path / "again")]) == 0   # the tested weights
    assert (tmp_path / "again" / "2_Dense").is_dir()
    other = folder / "checkpoints" / "other.ckpt"   # weights the whitening was not fitted on: exported without it
    os.link(folder / "checkpoints" / "best.ckpt", other)
    capsys.readouterr()
    assert main([str(other), str(tmp_path / "other")]) == 0 and not (tmp_path / "other" / "2_Dense").exists()
    assert "whitening.safetensors was fitted with best.ckpt, not other.ckpt: exported without it" \
        in capsys.readouterr().err


# --- Hugging Face sequence classification ----------------------------------------------------------------

def test_classifier_with_pooler_exports_hf_logits_and_labels(tmp_path, data_dir, tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = run_folder(tmp_path / "run", "task=classifier", "data=tnews", "loss=cross_entropy", "backbone=pretrained",
                        f"backbone.name_or_path={tiny_bert_dir}", "task.pooling=pooler", f"paths.data_dir={data_dir}",
                        *TINY, "data.train_limit=64", "data.eval_limit=32", "data.max_length=32", env=ONE_THREAD)
    out = exported(folder, tmp_path / "hf")
    datamodule, model = hub_model(folder)
    batch = next(iter(datamodule.loader("valid")))
    with torch.no_grad():
        hub = model(batch)
    hf, tokenizer = AutoModelForSequenceClassification.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    texts = ["query: " + text for text, in datamodule.read_split("valid").texts[:16]]
    inputs = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")   # max_length: model_max_length 32
    assert tokenizer.model_max_length == 32
    with torch.no_grad():
        logits = hf(**inputs).logits
    torch.testing.assert_close(logits, hub, rtol=0, atol=1e-5)
    names = datamodule.info.label_names
    assert hf.config.id2label == dict(enumerate(names)) and hf.config.label2id == {n: i for i, n in enumerate(names)}
    assert len(names) == 15 and names[0] == "100"


# --- refusals -----------------------------------------------------------------------------------------------

def refusal(capsys, *args: str) -> str:
    assert main([*args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hub.export: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_input_fails_with_one_line_naming_the_problem(tmp_path, capsys, monkeypatch, e5_dir):
    pretrained = ["backbone=pretrained", f"backbone.name_or_path={e5_dir}"]
    (tmp_path / "empty").mkdir()
    assert "is not a run folder: no .hydra/config.yaml" in refusal(capsys, str(tmp_path / "empty"), str(tmp_path / "o"))
    assert "no such run folder or checkpoint" in refusal(capsys, str(tmp_path / "missing"), str(tmp_path / "o"))
    (tmp_path / "loose.ckpt").write_bytes(b"x")
    assert "a checkpoint outside its run folder" in refusal(capsys, str(tmp_path / "loose.ckpt"), str(tmp_path / "o"))

    scratch = written_run(tmp_path / "scratch", "train=false")
    assert "is our own Transformer (lit_models/components/nn), which no Hugging Face class loads: exports are for " \
           "backbone=pretrained runs" in refusal(capsys, str(scratch), str(tmp_path / "o"))
    cross = written_run(tmp_path / "cross", "task=cross_encoder", *pretrained, "train=false")
    assert "task=cross_encoder has no export: its score w·h_cls + b reads the [CLS] vector with no pooler" \
        in refusal(capsys, str(cross), str(tmp_path / "o"))
    cls = written_run(tmp_path / "cls", "task=classifier", "data=tnews", "loss=cross_entropy", *pretrained)
    assert "task=classifier with task.pooling=cls feeds the pooled vector to its Linear head" \
        in refusal(capsys, str(cls), str(tmp_path / "o"))
    bi = written_run(tmp_path / "bi", *pretrained, "train=false")
    assert "task=bi_encoder exports as --format sentence-transformers, not hf" \
        in refusal(capsys, str(bi), str(tmp_path / "o"), "--format", "hf")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    moved = written_run(tmp_path / "moved", "backbone=pretrained", f"backbone.name_or_path={tmp_path / 'gone'}",
                        f"backbone.local_dir={tmp_path / 'gone'}", "train=false")
    assert f"cannot rebuild the run's model (backbone.name_or_path={tmp_path / 'gone'}): " \
        in refusal(capsys, str(moved), str(tmp_path / "o"))

    trained = written_run(tmp_path / "trained", *pretrained)
    assert "no checkpoints/best.ckpt or last.ckpt" in refusal(capsys, str(trained), str(tmp_path / "o"))
    (trained / "checkpoints").mkdir()
    (trained / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint")
    assert "best.ckpt: not a checkpoint of this run's task" in refusal(capsys, str(trained), str(tmp_path / "o"))

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert "OUT " + str(tmp_path / "full") + " is a folder that is not empty" \
        in refusal(capsys, str(bi), str(tmp_path / "full"))
    assert not (tmp_path / "o").exists()


def test_the_command_line_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hub.export", str(tmp_path), str(tmp_path / "out")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"hub.export: {tmp_path} is not a run folder: no .hydra/config.yaml; "
                                                f"pass a folder that run.py wrote (outputs/runs/<date>/<time>) or "
                                                f"one of its checkpoints"]
