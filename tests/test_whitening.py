"""BERT-whitening (kexue.fm/archives/8069, 8321): the streaming moments, the kernel, a zero-shot run of e5-small-zh
on STS-B checked against a computation with Hugging Face and NumPy alone, and the pooler pooling (P2)."""
from __future__ import annotations

import lzma

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

from lit_models.bi_encoder import whitening_options
from lit_models.components.backbones import ScratchBackbone
from lit_models.components.pooling import check_pooling
from lit_models.components.whitening import StreamingMoments, Whitening, whitening_kernel
from tests.conftest import results_of, run_cli


def numpy_whitening(vectors: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The post's recipe on all vectors at once: μ, Σ = cov(x) (1/n), U, Λ = svd(Σ), W = U·diag(1/√Λ)."""
    mu = vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(np.cov(vectors.T, bias=True))
    return mu, (u / np.sqrt(s))[:, :k]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_streaming_moments_equal_the_batch_estimate():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 24)) @ rng.normal(size=(24, 24)) + rng.normal(size=24) * 5
    moments = StreamingMoments()
    for part in np.split(vectors, [1, 7, 300, 301, 650]):   # uneven batches, one of a single vector
        moments.update(torch.from_numpy(part).float())
    reference = vectors.astype(np.float32).astype(np.float64)
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean.numpy(), reference.mean(0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(moments.cov.numpy(), np.cov(reference.T, bias=True), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [None, 8])
def test_kernel_whitens_and_gives_the_cosines_of_the_numpy_recipe(k):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16)) + 3.0
    moments = StreamingMoments()
    moments.update(torch.from_numpy(vectors))
    whitening = Whitening.fit(moments, k, {})
    x = whitening(torch.from_numpy(vectors)).double().numpy()
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(x.T, bias=True), np.eye(k or 16), atol=1e-4)   # float32 buffers
    mu, kernel = numpy_whitening(vectors, k)
    y = (vectors - mu) @ kernel   # SVD may flip a column's sign: dot products and cosines do not see it
    np.testing.assert_allclose(cosines(x[:250], x[250:]), cosines(y[:250], y[250:]), atol=1e-5)
    full = whitening_kernel(torch.from_numpy(np.cov(vectors.T, bias=True)))
    np.testing.assert_allclose(full.numpy() @ full.numpy().T, np.linalg.inv(np.cov(vectors.T, bias=True)), rtol=1e-8)


def test_whitening_options_refuse_what_they_cannot_do():
    assert whitening_options("none", "train") == (None, ("train",))
    assert whitening_options(128, "all") == (128, ("train", "valid", "test"))
    with pytest.raises(ValueError, match="task.whitening must be none, full or a number of dimensions k > 0, got 0"):
        whitening_options(0, "train")
    with pytest.raises(ValueError, match=r"task.whitening_fit must be one of \['all', 'eval', 'train'\], got 'dev'"):
        whitening_options("full", "dev")
    with pytest.raises(ValueError, match="task.pooling=pooler reads BERT's pooler, which ScratchBackbone"):
        check_pooling("pooler", ScratchBackbone.__new__(ScratchBackbone))
    moments = StreamingMoments()
    moments.update(torch.ones(3, 4))
    with pytest.raises(ValueError, match="task.whitening=9: keep between 1 and 4 dimensions"):
        Whitening.fit(moments, 9, {})


def read_pairs(path, limit: int) -> tuple[list[str], list[str], np.ndarray]:
    rows = [line.rstrip("\n").split("\t") for line in lzma.open(path, "rt", encoding="utf-8")][:limit]
    return [r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows])


def hf_first_last_vectors(model_dir, texts: list[str]) -> np.ndarray:
    """P4 by transformers alone: the masked mean of (first block's output + last block's output) / 2 of
    "query: " + text (E5's prefix), truncated at 64 tokens like data=stsb."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            batch = tokenizer(["query: " + t for t in texts[i:i + 128]], truncation=True, max_length=64,
                              padding=True, return_tensors="pt")
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).double()
            out.append(((hidden[1] + hidden[-1]).double() / 2 * mask).sum(1).numpy() / mask.sum(1).numpy())
    return np.concatenate(out)


def test_e5_first_last_avg_whitened_on_the_test_split_matches_hugging_face_and_numpy(tmp_path, data_dir, e5_dir):
    """P4 with whitening to k=128 fitted on the evaluated split itself: results.json's Spearman and
    whitening.safetensors equal what transformers' hidden states and the NumPy recipe give on the same pairs."""
    n = 300
    run_cli(tmp_path, "backbone=pretrained", f"backbone.name_or_path={e5_dir}", "data=stsb", f"paths.data_dir={data_dir}",
            "train=false", "logger=none", "task.pooling=first_last_avg", "task.whitening=128",
            "task.whitening_fit=eval", f"data.eval_limit={n}")
    [results] = results_of(tmp_path)
    assert results["whitening"]["splits"] == ["test"] and results["whitening"]["vectors"] == 2 * n
    first, second, labels = read_pairs(data_dir / "stsb_zh" / "STS-B.test.data.xz", n)
    vectors = hf_first_last_vectors(e5_dir, first + second)
    mu, kernel = numpy_whitening(vectors, 128)
    a, b = (vectors[:n] - mu) @ kernel, (vectors[n:] - mu) @ kernel
    expected = spearmanr(cosines(a, b), labels).statistic
    assert results["test"]["test/spearman"] == pytest.approx(expected, abs=1e-4)
    saved = load_file(results["whitening"]["file"])
    assert saved["kernel"].shape == (384, 128)
    np.testing.assert_allclose(saved["mean"].numpy(), mu, atol=1e-4)
    hub_a, hub_b = ((x - saved["mean"].numpy()) @ saved["kernel"].numpy() for x in (vectors[:n], vectors[n:]))
    np.testing.assert_allclose(cosines(hub_a, hub_b), cosines(a, b), atol=1e-3)
    unwhitened = spearmanr(cosines(vectors[:n], vectors[n:]), labels).statistic
    assert abs(expected - unwhitened) > 0.01   # whitening changed the ranking: the checks above see it


def test_pooler_pooling_is_berts_pooler_output(tmp_path):
    """P2: tanh(W·h_cls + b) of the model's own pooler, equal to transformers' pooler_output."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from lit_models.components.backbones import PretrainedBackbone
    from lit_models.components.pooling import pool

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    backbone = PretrainedBackbone(str(tmp_path), pooling="pooler").eval()
    reference = BertModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(5, 15, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        ours = pool(backbone(ids, mask), mask, "pooler", backbone.pooler)
        torch.testing.assert_close(ours, reference(input_ids=ids, attention_mask=mask).pooler_output)
        assert PretrainedBackbone(str(tmp_path), pooling="mean").pooler is None   # not trained, not in DDP's way


def test_a_checkpoint_without_a_trained_pooler_refuses_pooler_pooling(e5_dir):
    from lit_models.components.backbones import PretrainedBackbone

    with pytest.raises(ValueError, match="task.pooling=pooler: the pooler of .* is all zeros"):
        PretrainedBackbone(str(e5_dir), pooling="pooler")


def test_a_trained_checkpoint_is_tested_again_and_whitened_without_training(tmp_path):
    """train=false ckpt_path=best.ckpt tests those weights (the same Spearman as the training run's own test),
    and with task.whitening the same weights are evaluated whitened."""
    run_cli(tmp_path / "trained", "trainer.max_epochs=1", "logger=none", "data.train_limit=200")
    [trained] = results_of(tmp_path / "trained")
    best = trained["best"]["path"]
    run_cli(tmp_path / "again", "train=false", f"ckpt_path={best}", "logger=none")
    run_cli(tmp_path / "whitened", "train=false", f"ckpt_path={best}", "logger=none", "task.whitening=full")
    [again], [whitened] = results_of(tmp_path / "again"), results_of(tmp_path / "whitened")
    assert again["tested_checkpoint"] == best
    assert again["test"]["test/spearman"] == pytest.approx(trained["test"]["test/spearman"], abs=1e-6)
    assert whitened["whitening"]["splits"] == ["train"] and whitened["whitening"]["vectors"] == 2 * 600
    assert abs(whitened["test"]["test/spearman"] - again["test"]["test/spearman"]) > 1e-3
    missing = run_cli(tmp_path / "missing", "train=false", "ckpt_path=nowhere.ckpt", "logger=none", check=False)
    assert missing.returncode != 0 and "ckpt_path=nowhere.ckpt: no such file" in missing.stderr + missing.stdout


def test_whitening_to_more_dimensions_than_the_encoder_fails_before_training(tmp_path):
    proc = run_cli(tmp_path, "task.whitening=4096", "logger=none", check=False)
    assert proc.returncode != 0 and "task.whitening=4096 keeps more dimensions than the encoder's" in proc.stderr + proc.stdout
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
