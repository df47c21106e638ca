import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from hub.config import PROJECT_ROOT, ConfigError, check_config
from tests.conftest import CONF_DIR, compose_config

GROUPS = ["task", "data", "backbone", "loss", "optimizer", "scheduler", "init", "attention", "trainer", "logger",
          "callbacks", "paths", "hydra", "experiment", "debug"]


def choices(group):
    return sorted(str(p.relative_to(CONF_DIR / group).with_suffix("")) for p in (CONF_DIR / group).rglob("*.yaml"))


@pytest.mark.parametrize("group, choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_choice_composes_and_resolves(group, choice):
    cfg = compose_config(f"{group}={choice}" if group != "hydra" else "seed=1")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("task", "data", "backbone", "loss", "optimizer", "scheduler", "init", "trainer"):
        assert resolved[key]["_target_"], key


def test_every_group_of_the_defaults_list_has_choices():
    for group in GROUPS:
        assert choices(group), f"conf/{group}/ is empty"


def test_experiment_pins_the_posts_protocol():
    cfg = compose_config("experiment=cosent_vs_sbert", "data=stsb", "backbone=pretrained")
    assert cfg.optimizer.lr == 2e-5 and cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 5
    assert cfg.data.max_length == 64 and cfg.loss.scale == 20.0 and cfg.experiment_name == "cosent_vs_sbert"
    assert compose_config("experiment=cosent_vs_sbert", "data=pawsx").data.max_length == 128
    assert compose_config("experiment=cosent_vs_sbert", "loss=sbert").loss._target_.endswith("SBERTLoss")


ADAMW_RECIPES = {"afqmc": (2e-5, 10), "wsc": (2e-5, 10), "cluener": (1e-4, 20)}  # (encoder lr, head scale)


@pytest.mark.parametrize("name, task, data, loss", [
    ("afqmc", "Classifier", "afqmc", "CrossEntropyLoss"), ("wsc", "Classifier", "wsc", "CrossEntropyLoss"),
    ("cluener", "GlobalPointerTask", "cluener", "MultilabelCategoricalCrossEntropy"),
    ("c3", "MultipleChoice", "c3", "CrossEntropyLoss")])
def test_clue_experiments_pin_task_data_loss_and_optimizer(name, task, data, loss):
    cfg = compose_config(f"experiment=clue/{name}")
    assert cfg.task._target_.endswith(task) and cfg.data.name == data and cfg.loss._target_.endswith(loss)
    if name in ADAMW_RECIPES:  # the post's AdaFactor left these at the majority class / F1 0 (README)
        lr, head_scale = ADAMW_RECIPES[name]
        assert cfg.optimizer._target_.endswith("AdamW") and cfg.optimizer.lr == lr
        assert cfg.task.head_lr_scale == head_scale
    else:
        assert cfg.optimizer._target_.endswith("Adafactor") and cfg.optimizer.lr == 5e-4 and cfg.optimizer.scale_parameter
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 10 and cfg.backbone.name_or_path
    # the experiment's keys win over conf/config.yaml's own
    assert cfg.experiment_name == "clue_baseline" and cfg.predict is True
    assert compose_config(f"experiment=clue/{name}", "predict=false").predict is False


def test_clue_baseline_alone_is_afqmc_and_takes_another_classification_task():
    cfg = compose_config("experiment=clue_baseline")
    assert cfg.task._target_.endswith("Classifier") and cfg.data.name == "afqmc" and cfg.predict is True
    assert compose_config("experiment=clue_baseline", "data=tnews").data.name == "tnews"


def test_optimizer_lr_follows_the_backbone_unless_set():
    assert compose_config("backbone=pretrained").optimizer.lr == 2e-5
    assert compose_config("backbone=scratch_tiny").optimizer.lr == 1e-3
    assert compose_config("backbone=pretrained", "optimizer.lr=5e-5").optimizer.lr == 5e-5


def test_cfg_job_prints_the_composed_config():
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "run.py"), "--cfg", "job", "loss=sbert"],
                          capture_output=True, text=True, timeout=120, check=True)
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.loss._target_ == "lit_models.components.losses.SBERTLoss" and cfg.task.pooling == "mean"


def test_a_clashing_combination_names_both_keys_and_the_valid_choices():
    with pytest.raises(ConfigError, match=r"loss=lm does not work with task=bi_encoder: "
                                          r"task=bi_encoder takes loss=cosent\|cosine_mse\|flatnce\|infonce\|sbert$"):
        check_config(compose_config("loss=lm", "data=stsb"))
    with pytest.raises(ConfigError, match=r"data=afqmc does not work with task=bi_encoder: task=bi_encoder takes "
                                          r"data=atec\|bq\|lcqmc\|pawsx\|stsb\|stsb_sample$"):
        check_config(compose_config("data=afqmc"))
    with pytest.raises(ConfigError, match=r"data=tnews does not work with task=cross_encoder: .* data=afqmc\|atec"):
        check_config(compose_config("task=cross_encoder", "data=tnews", "loss=cosent"))
    check_config(compose_config("loss=sbert", "data=bq"))
    check_config(compose_config("task=cross_encoder", "data=afqmc", "loss=cross_entropy"))


@pytest.mark.parametrize("overrides, message", [
    (["backbone=pretrained", "attention=gau"], r"attention=gau does not work with backbone=pretrained"),
    (["init=deepnorm"], r"init=deepnorm needs backbone.norm=deepnorm \(got backbone.norm=post\)"),
    (["task=masked_lm", "loss=lm", "data=corpus", "backbone=pretrained"],
     r"task=masked_lm does not work with backbone=pretrained"),
])
def test_clashes_between_axes_fail_before_anything_loads(tmp_path, overrides, message):
    from tests.conftest import results_of, run_cli

    proc = run_cli(tmp_path, *overrides, "logger=none", check=False)
    assert proc.returncode != 0
    assert __import__("re").search(message, proc.stderr), proc.stderr[-2000:]
    [results] = results_of(tmp_path)
    assert results["status"] == "failed" and "ConfigError" in results["error"]


def test_deepnorm_with_its_norm_passes_the_check():
    check_config(compose_config("init=deepnorm", "backbone.norm=deepnorm"))


HINGE = '''
import torch.nn.functional as F
from torch import nn


class CosineHingeLoss(nn.Module):
    """mean(max(0, m - cos) for similar pairs, max(0, cos) for the others): a loss the hub does not ship."""

    inputs = ("pair_embeddings",)
    global_batch = False

    def __init__(self, margin: float = 0.8):
        super().__init__()
        self.margin = margin

    def forward(self, u, v, labels):
        cos = F.cosine_similarity(u.float(), v.float(), dim=-1)
        return (labels > 0.5).float().mul(F.relu(self.margin - cos)).add((labels <= 0.5).float() * F.relu(cos)).mean()
'''


def test_a_new_loss_is_one_class_and_one_yaml(tmp_path):
    """Outside the project: a module with the class, a conf/loss/<name>.yaml on Hydra's search path."""
    (tmp_path / "my_losses.py").write_text(HINGE)
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "hinge.yaml").write_text("_target_: my_losses.CosineHingeLoss\nmargin: 0.7\n")
    env = {"PYTHONPATH": str(tmp_path)}
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    from tests.conftest import results_of, run_cli

    run_cli(tmp_path / "ok", "loss=hinge", search, "logger=csv", "trainer.max_steps=3", env=env)
    [results] = results_of(tmp_path / "ok")
    assert results["status"] == "completed" and results["choices"]["loss"] == "hinge" and results["steps"] == 3
    proc = run_cli(tmp_path / "clash", "loss=hinge", search, "task=classifier", "data=tnews", "logger=none",
                   env=env, check=False)
    assert proc.returncode != 0
    assert "loss=hinge does not work with task=classifier: task=classifier takes loss=cross_entropy" in proc.stderr
