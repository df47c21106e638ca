"""task=multitask (kexue.fm/archives/8870): the weightings against their formulas, the interleaving DataModule,
the compatibility check, and one run through `python run.py`."""
import math
from collections import Counter
from dataclasses import asdict

import pytest
import torch
from hydra.utils import instantiate

from hub.config import ConfigError, check_config
from lit_models.base import as_data_info
from lit_models.components.losses import CoSENTLoss, CrossEntropyLoss
from lit_models.components.weighting import (
    DynamicLoss,
    Equal,
    GeneralizedMean,
    GradNormalized,
    InitialLoss,
    PriorLoss,
)
from lit_models.multitask import ClassificationObjective, PairObjective
from tests.conftest import compose_config, results_of, run_cli
from text.info import DataInfo

# --- the weightings on a two-task toy: L_i(θ) = (θ − a_i)ᵀ A_i (θ − a_i) + c_i, ∇L_i = 2 A_i (θ − a_i) ------

A = [torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64),
     torch.tensor([[0.3, 0.0], [0.0, 4.0]], dtype=torch.float64)]
CENTRES = [torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([-0.5, 0.7], dtype=torch.float64)]
OFFSETS = [0.4, 3.0]
TASKS = ["one", "two"]


def toy(theta):
    """({task: L_i}, {task: ∇L_i by hand}) at θ."""
    losses, grads = {}, {}
    for name, a, c, offset in zip(TASKS, A, CENTRES, OFFSETS):
        d = theta - c
        losses[name] = d @ a @ d + offset
        grads[name] = (2 * a @ d).detach()
    return losses, grads


def combined(weighting, theta, tasks=TASKS):
    """(value, autograd gradient w.r.t. θ, the tasks' loss values and hand gradients) of the scheme at θ."""
    theta = theta.clone().requires_grad_()
    losses, grads = toy(theta)
    value = weighting({name: losses[name] for name in tasks}, [theta])
    (gradient,) = torch.autograd.grad(value, theta)
    return value.detach(), gradient, {k: v.detach() for k, v in losses.items()}, grads


def scheme(cls, **options):
    weighting = cls(**options)
    weighting.setup(TASKS)
    return weighting


THETA = torch.tensor([0.3, 0.9], dtype=torch.float64)


def test_equal_is_the_plain_sum():
    value, gradient, L, g = combined(scheme(Equal), THETA)
    assert value == pytest.approx(float(L["one"] + L["two"]))
    torch.testing.assert_close(gradient, g["one"] + g["two"])


def test_static_references_divide_each_loss():
    weighting = scheme(InitialLoss)
    weighting.fit({"one": 2.5, "two": 0.8})
    value, gradient, L, g = combined(weighting, THETA)
    assert value == pytest.approx(float(L["one"] / 2.5 + L["two"] / 0.8), rel=1e-6)
    torch.testing.assert_close(gradient, g["one"] / 2.5 + g["two"] / 0.8)
    assert bool(weighting.fitted) and weighting.summary()["references"] == pytest.approx({"one": 2.5, "two": 0.8})


class Backbone:
    hidden_size, pooler = 8, None


def test_references_theoretical_prior_and_measured():
    classes = ClassificationObjective(loss=CrossEntropyLoss(), data=DataInfo("c", num_labels=3), backbone=Backbone())
    pairs = PairObjective(loss=CoSENTLoss(), data=DataInfo("p"), backbone=Backbone())
    labels = torch.tensor([0, 0, 1, 2])
    measure = lambda: torch.tensor(7.0)   # noqa: E731 - the measured mean loss of the first batches
    measured, theoretical, prior = InitialLoss("measured"), InitialLoss("theoretical"), PriorLoss()
    assert measured.reference(classes, measure, lambda: labels) == 7.0
    assert theoretical.reference(classes, measure, lambda: labels) == pytest.approx(math.log(3))   # log K
    entropy = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))             # class frequencies 1/2, 1/4, 1/4
    assert prior.reference(classes, measure, lambda: labels) == pytest.approx(entropy)
    for weighting in (theoretical, prior):   # a ranking loss has neither: its initial loss is measured
        assert weighting.reference(pairs, measure, lambda: labels) == 7.0


def test_dynamic_gradient_is_that_of_the_sum_of_log_losses():
    value, gradient, L, g = combined(scheme(DynamicLoss), THETA)
    assert value == pytest.approx(2.0)                      # each L_i / sg(L_i) is 1
    torch.testing.assert_close(gradient, g["one"] / L["one"] + g["two"] / L["two"])
    theta = THETA.clone().requires_grad_()
    losses, _ = toy(theta)
    (log_gradient,) = torch.autograd.grad(losses["one"].log() + losses["two"].log(), theta)
    torch.testing.assert_close(gradient, log_gradient)


@pytest.mark.parametrize("gamma", [2.0, 1.0, 0.0, -1.0])
def test_generalized_mean_value_and_gradient(gamma):
    value, gradient, L, g = combined(scheme(GeneralizedMean, gamma=gamma), THETA)
    l1, l2 = float(L["one"]), float(L["two"])
    mean = math.sqrt(l1 * l2) if gamma == 0 else ((l1 ** gamma + l2 ** gamma) / 2) ** (1 / gamma)
    assert float(value) == pytest.approx(mean, rel=1e-5)
    # ∂M/∂L_i = (1/n)·(L_i / M)^(γ−1)
    expected = sum(0.5 * (l / mean) ** (gamma - 1) * g[name].float() for name, l in (("one", l1), ("two", l2)))
    torch.testing.assert_close(gradient.float(), expected, rtol=1e-4, atol=1e-5)


def test_generalized_mean_reads_absent_tasks_from_their_running_loss():
    weighting = scheme(GeneralizedMean, gamma=2.0, momentum=0.5)
    value, gradient, L, g = combined(weighting, THETA, tasks=["one"])     # nothing seen yet: n = 1, M = L_1
    assert float(value) == pytest.approx(float(L["one"]), rel=1e-6)
    torch.testing.assert_close(gradient.float(), g["one"].float())
    first_two = float(combined(weighting, THETA, tasks=["two"])[2]["two"])
    theta = torch.tensor([-1.0, 0.2], dtype=torch.float64)
    value, gradient, L, g = combined(weighting, theta, tasks=["one"])
    l1, l2 = float(L["one"]), first_two                                   # task two enters as sg(its EMA)
    mean = math.sqrt((l1 ** 2 + l2 ** 2) / 2)
    assert float(value) == pytest.approx(mean, rel=1e-5)
    torch.testing.assert_close(gradient.float(), (0.5 * (l1 / mean) * g["one"]).float(), rtol=1e-4, atol=1e-5)
    first_one = float(toy(THETA)[0]["one"])
    assert weighting.running.tolist() == pytest.approx([0.5 * first_one + 0.5 * l1, first_two], rel=1e-5)
    assert weighting.seen.tolist() == [True, True]


def test_grad_normalized_sums_unit_gradients_of_the_shared_parameters():
    theta = THETA.clone().requires_grad_()
    head = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)    # task two's own weight: not in the norm
    losses, grads = toy(theta)
    losses["two"] = losses["two"] * head ** 2
    grads["two"] = grads["two"] * 0.49
    value = scheme(GradNormalized)(losses, [theta])
    gradient, head_gradient = torch.autograd.grad(value, [theta, head])
    norms = {name: grads[name].norm() for name in TASKS}
    assert float(value.detach()) == pytest.approx(float(sum(losses[n].detach() / norms[n] for n in TASKS)), rel=1e-6)
    torch.testing.assert_close(gradient, grads["one"] / norms["one"] + grads["two"] / norms["two"])
    torch.testing.assert_close(head_gradient, 2 * losses["two"].detach() / head.detach() / norms["two"])
    shifted = {name: loss + 5.0 for name, loss in toy(theta)[0].items()}   # shift- (and scale-) invariant
    scaled = {"one": 3 * shifted["one"], "two": shifted["two"]}
    (invariant,) = torch.autograd.grad(scheme(GradNormalized)(scaled, [theta]), theta)
    unit = {name: g / g.norm() for name, g in toy(theta)[1].items()}
    torch.testing.assert_close(invariant, unit["one"] + unit["two"])


# --- the DataModule: every example once per epoch, one task per batch, each task's own collate -----------

def multitask_data(data_dir, tmp_path, *overrides):
    from transformers import BertTokenizer

    from lit_models.components.backbones import VOCAB_DIR

    cfg = compose_config("task=multitask", "data=multitask", "+data@data.tasks.sts=stsb_sample",
                         "+data@data.tasks.afqmc=afqmc", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path}",
                         "data.tasks.afqmc.train_limit=200", "data.tasks.afqmc.batch_size=24", *overrides)
    dm = instantiate(cfg.data)
    dm.set_tokenizer(BertTokenizer.from_pretrained(str(VOCAB_DIR / "bert-base-chinese")))
    dm.setup("fit")
    return dm


def test_proportional_epoch_sees_every_example_once_in_batches_of_one_task(data_dir, tmp_path):
    dm = multitask_data(data_dir, tmp_path)
    sts, afqmc = dm.tasks["sts"].datasets["train"], dm.tasks["afqmc"].datasets["train"]
    loader = dm.train_dataloader()
    assert len(loader) == math.ceil(600 / 32) + math.ceil(200 / 24)
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        epochs.append([b["task"] for b in batches])
        pairs, indexes = Counter(), []
        for batch in batches:
            n = len(batch["labels"])
            if batch["task"] == "sts":   # a pair batch: [2B, L] (the B first sentences, then the B second ones)
                assert set(batch) == {"input_ids", "attention_mask", "labels", "task"}
                assert batch["input_ids"].shape[0] == 2 * n and batch["labels"].dtype == torch.float32
                for row, mask, label in zip(batch["input_ids"][:n], batch["attention_mask"][:n], batch["labels"]):
                    pairs[(tuple(row[mask.bool()].tolist()), round(float(label), 4))] += 1
            else:                        # a classification batch: [B, L], class ids and positions
                assert batch["task"] == "afqmc"
                assert set(batch) == {"input_ids", "attention_mask", "labels", "index", "task"}
                assert batch["input_ids"].shape[0] == n and batch["labels"].dtype == torch.int64
                indexes += batch["index"].tolist()
        assert sorted(indexes) == list(range(200))
        assert pairs == Counter((tuple(sts[i][0]), round(sts[i][2], 4)) for i in range(len(sts)))
        assert len(afqmc) == 200
    # interleaved, not task after task; a new order each epoch, the same for the same seed
    first_half = epochs[0][:len(loader) // 2]
    assert {"sts", "afqmc"} <= set(first_half)
    assert epochs[0] != epochs[1]
    assert loader.schedule(0) == multitask_data(data_dir, tmp_path).train_dataloader().schedule(0) == epochs[0]
    assert as_data_info(asdict(dm.info)) == dm.info and dm.info.tasks["afqmc"].num_labels == 2


def test_round_robin_takes_turns_and_repeats_the_smaller_set(data_dir, tmp_path):
    dm = multitask_data(data_dir, tmp_path, "data.interleave=round_robin")
    loader = dm.train_dataloader()
    batches = [b["task"] for b in loader]
    assert len(batches) == len(loader) == 2 * math.ceil(600 / 32)
    assert batches[:4] == ["sts", "afqmc", "sts", "afqmc"]


def test_a_task_without_test_labels_is_tested_on_valid(data_dir, tmp_path):
    dm = multitask_data(data_dir, tmp_path)
    assert dm.test_splits == {"sts": "test", "afqmc": "valid"}
    assert dm.splits_of("afqmc", ["train", "valid", "test"]) == ["train", "valid", "valid"]


# --- the compatibility check -------------------------------------------------------------------------

TWO_TASKS = ["task=multitask", "data=multitask", "+data@data.tasks.sts=stsb_sample", "+task.tasks.sts.kind=pairs"]


def test_a_sub_task_whose_data_does_not_fit_its_kind_fails_the_check():
    cfg = compose_config(*TWO_TASKS, "+data@data.tasks.tnews=tnews", "+task.tasks.tnews.kind=pairs")
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value) == ("task.tasks.tnews: data=tnews does not work with kind=pairs: kind=pairs takes "
                                "data=atec|bq|lcqmc|pawsx|stsb|stsb_sample; data=tnews fits kind=classification")


def test_the_check_names_a_missing_loss_a_missing_data_and_an_unknown_kind():
    def message(*overrides):
        with pytest.raises(ConfigError) as error:
            check_config(compose_config(*overrides))
        return str(error.value)

    assert message(*TWO_TASKS, "+data@data.tasks.afqmc=afqmc", "+task.tasks.afqmc.kind=classification") == (
        "task.tasks.afqmc: loss=cosent (the run's: task.tasks.afqmc sets no loss of its own) does not work with "
        "kind=classification: kind=classification takes loss=cross_entropy; set it with "
        "`/loss@task.tasks.afqmc.loss: <choice>` in the defaults "
        "(command line: `+loss@task.tasks.afqmc.loss=<choice>`)")
    assert message(*TWO_TASKS, "+task.tasks.bq.kind=pairs").startswith("task.tasks.bq has no data: add "
                                                                        "`/data@data.tasks.bq: <choice>`")
    assert message(*TWO_TASKS, "task.tasks.sts.kind=regression") == ("task.tasks.sts.kind=regression is not a kind: "
                                                                     "use pairs|classification")
    assert message(*TWO_TASKS, "+data@data.tasks.bq=bq", "+task.tasks.bq.kind=pairs", "trainer=ddp").endswith(
        "use trainer.strategy=ddp_find_unused_parameters_true")
    assert message("task=multitask", "data=stsb").startswith("data=stsb does not work with task=multitask: "
                                                             "task=multitask takes data=multitask")


@pytest.mark.parametrize("experiment", ["multitask_sts_afqmc", "roformer_sim"])
def test_the_experiments_pass_the_check(experiment):
    cfg = compose_config(f"experiment={experiment}")
    check_config(cfg)
    assert cfg.task.monitor == "val/mean" and cfg.weighting._target_.endswith("Equal")
    if experiment == "roformer_sim":
        assert list(cfg.data.tasks) == ["stsb", "bq", "atec", "lcqmc", "pawsx"]
        assert cfg.data.eval_only == ["lcqmc", "pawsx"]
        assert all(spec.kind == "pairs" and "loss" not in spec for spec in cfg.task.tasks.values())
    else:
        assert cfg.data.tasks.bq.train_limit == 20000
        assert cfg.task.tasks.afqmc.loss._target_.endswith("CrossEntropyLoss")


# --- one run through run.py ----------------------------------------------------------------------------

def test_cli_trains_two_tasks_and_reports_each_tasks_test_metric_and_their_mean(tmp_path, data_dir):
    run_cli(tmp_path, *TWO_TASKS, "+data@data.tasks.afqmc=afqmc", "+task.tasks.afqmc.kind=classification",
            "+loss@task.tasks.afqmc.loss=cross_entropy", "data.tasks.afqmc.train_limit=256",
            "data.tasks.afqmc.eval_limit=200", f"paths.data_dir={data_dir}", "weighting=initial",
            "trainer.max_epochs=1", "logger=csv")
    [results] = results_of(tmp_path)
    test = results["test"]
    assert results["status"] == "completed" and results["choices"]["weighting"] == "initial"
    assert {"test/sts/spearman", "test/afqmc/accuracy", "test/afqmc/macro_f1", "test/mean"} <= set(test)
    assert test["test/mean"] == pytest.approx((test["test/sts/spearman"] + test["test/afqmc/accuracy"]) / 2, abs=1e-6)
    assert results["best"]["metric"] == "val/mean" and results["steps"] == math.ceil(600 / 32) + math.ceil(256 / 32)
    summary = results["multitask"]
    assert summary["test_splits"] == {"sts": "test", "afqmc": "valid"} and summary["trained"] == ["sts", "afqmc"]
    references = summary["weighting"]["references"]     # measured: CoSENT over 32 pairs ≫ 2-class CE ≈ log 2
    assert references["sts"] > 3 and references["afqmc"] == pytest.approx(math.log(2), abs=0.3)


def test_cli_fails_before_training_on_an_incompatible_sub_task(tmp_path):
    proc = run_cli(tmp_path, *TWO_TASKS, "+data@data.tasks.tnews=tnews", "+task.tasks.tnews.kind=pairs",
                   "logger=csv", check=False)
    assert proc.returncode != 0 and "task.tasks.tnews: data=tnews does not work with kind=pairs" in proc.stderr
    [results] = results_of(tmp_path)
    assert results["status"] == "failed" and results["error"].startswith("ConfigError")
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
