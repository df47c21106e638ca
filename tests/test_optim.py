import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from lit_models.base import parameter_groups
from lit_models.components.optim import Adafactor, Lion, Tiger
from lit_models.components.schedules import (
    constant,
    cosine,
    linear_warmup,
    piecewise_linear,
)
from tests.conftest import CONF_DIR, compose_config

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONF_DIR / "scheduler").glob("*.yaml"))


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def param(values):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def step_with(optimizer, grads):
    """One optimizer step with the given gradient for each parameter (in param-group order)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, g in zip(params, grads):
        p.grad = torch.as_tensor(g, dtype=p.dtype).clone()
    optimizer.step()


def test_lion_three_steps_by_hand():
    theta = param([1.0, -2.0, 0.5])
    opt = Lion([theta], lr=0.1, betas=(0.9, 0.99), weight_decay=0.1)
    # m0 = 0, so u1 = sign(g1) = [1, -1, 0]; θ1 = θ0 − 0.1·(u1 + 0.1·θ0); m1 = 0.01·g1 = [0.005, -0.01, 0]
    step_with(opt, [[0.5, -1.0, 0.0]])
    assert torch.allclose(theta.detach(), torch.tensor([0.89, -1.88, 0.495], dtype=torch.float64))
    assert torch.allclose(opt.state[theta]["exp_avg"], torch.tensor([0.005, -0.01, 0.0], dtype=torch.float64))
    # u2 = sign(0.9·m1 + 0.1·g2) = sign([-0.0055, 0.011, 0.1]); m2 = 0.99·m1 + 0.01·g2 = [0.00395, -0.0079, 0.01]
    step_with(opt, [[-0.1, 0.2, 1.0]])
    assert torch.allclose(theta.detach(), torch.tensor([0.9811, -1.9612, 0.39005], dtype=torch.float64))
    # u3 = sign(0.9·m2 + 0.1·g3) = sign([-0.001445, -0.00211, -0.041]) = [-1, -1, -1]. Coordinate 0 takes the
    # sign of g3 (β1 mix) although 0.99·m2 + 0.01·g3 > 0 (β2 mix); coordinate 1 follows m2 against g3 > 0.
    step_with(opt, [[-0.05, 0.05, -0.5]])
    assert torch.allclose(theta.detach(), torch.tensor([1.071289, -1.841588, 0.4861495], dtype=torch.float64))
    assert torch.allclose(opt.state[theta]["exp_avg"], torch.tensor([0.0034105, -0.007321, 0.0049], dtype=torch.float64))


def sign(x: float) -> float:
    return float(x > 0) - float(x < 0)


def tiger_reference(theta: list[float], grads: list[list[float]], lr: float, beta: float, wd: float,
                    kernel: bool) -> list[float]:
    """The post's update on plain floats: m = β·m + (1−β)·g; θ −= η·(sign(m) + λ·θ)."""
    m = [0.0] * len(theta)
    for g in grads:
        m = [beta * mi + (1 - beta) * gi for mi, gi in zip(m, g)]
        if kernel:
            eta, decay = lr * math.sqrt(sum(x * x for x in theta) / len(theta)), wd
        else:
            eta, decay = 0.5 * lr, 0.0
        theta = [x - eta * (sign(mi) + decay * x) for x, mi in zip(theta, m)]
    return theta


def test_tiger_three_steps_by_hand():
    kernel, bias = param([[1.0, -1.0], [1.0, 1.0]]), param([0.5, -0.5])
    opt = Tiger([{"params": [kernel]}, {"params": [bias], "weight_decay": 0.0}], lr=0.1, beta=0.5, weight_decay=0.1)
    kernel_grads = [[[0.2, -0.1], [0.0, 0.3]], [[-0.5, -0.1], [0.1, -0.1]], [[0.1, 0.3], [-0.4, 0.2]]]
    bias_grads = [[-1.0, 0.1], [0.4, -0.3], [1.5, 0.2]]
    # Step 1: RMS(θ0) = 1, m1 = 0.5·g1 → sign [[1, -1], [0, 1]]; θ1 = θ0 − 0.1·(sign + 0.1·θ0).
    # Bias: η = 0.1/2, no decay: b1 = b0 − 0.05·[-1, 1].
    step_with(opt, [kernel_grads[0], bias_grads[0]])
    assert torch.allclose(kernel.detach(), torch.tensor([[0.89, -0.89], [0.99, 0.89]], dtype=torch.float64))
    assert torch.allclose(bias.detach(), torch.tensor([0.55, -0.55], dtype=torch.float64))
    for kg, bg in zip(kernel_grads[1:], bias_grads[1:]):
        step_with(opt, [kg, bg])
    flat_grads = [sum(g, []) for g in kernel_grads]
    expected_kernel = tiger_reference([1.0, -1.0, 1.0, 1.0], flat_grads, 0.1, 0.5, 0.1, kernel=True)
    expected_bias = tiger_reference([0.5, -0.5], bias_grads, 0.1, 0.5, 0.1, kernel=False)
    assert torch.allclose(kernel.detach().flatten(), torch.tensor(expected_kernel, dtype=torch.float64))
    assert torch.allclose(bias.detach(), torch.tensor(expected_bias, dtype=torch.float64))


def test_tiger_step_is_alpha_times_rms_for_kernels_and_half_alpha_for_vectors():
    torch.manual_seed(0)
    small, large, bias = param(torch.randn(3, 4).tolist()), param((10 * torch.randn(3, 4)).tolist()), param([0.1, -3.0])
    before = [p.detach().clone() for p in (small, large, bias)]
    opt = Tiger([small, large, bias], lr=0.01, weight_decay=0.0)
    step_with(opt, [torch.randn(3, 4), torch.randn(3, 4), [2.0, -1e-6]])
    for p, p0 in zip((small, large), before):
        rms = p0.pow(2).mean().sqrt()
        assert torch.allclose((p.detach() - p0).abs(), torch.full_like(p0, 0.01) * rms)
    assert torch.allclose((bias.detach() - before[2]).abs(), torch.full((2,), 0.005, dtype=torch.float64))


def test_tiger_weight_decay_only_on_kernels():
    kernel, bias, gain = param([[3.0, -4.0], [0.0, 0.0]]), param([1.0, -2.0]), param([1.5, 0.5])
    # One group with the optimizer's weight decay for all three: vectors must still not decay.
    opt = Tiger([{"params": [kernel, bias]}, {"params": [gain], "norm_gain": True}], lr=0.1, weight_decay=0.2)
    step_with(opt, [torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)])  # sign(0) = 0: only the decay moves θ
    rms = math.sqrt((9 + 16) / 4)
    assert torch.allclose(kernel.detach(), torch.tensor([[3.0, -4.0], [0.0, 0.0]], dtype=torch.float64) * (1 - 0.1 * rms * 0.2))
    assert torch.equal(bias.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert torch.equal(gain.detach(), torch.tensor([1.5, 0.5], dtype=torch.float64))


def test_tiger_nan_guard_shrinks_gains_to_one_and_biases_to_zero_and_keeps_the_momentum():
    kernel, bias, gain = param([[1.0, -2.0], [0.5, 0.5]]), param([0.4, -0.2]), param([1.2, 0.9])
    opt = Tiger([{"params": [kernel]}, {"params": [bias], "weight_decay": 0.0},
                 {"params": [gain], "weight_decay": 0.0, "norm_gain": True}], lr=0.01, beta=0.9)
    step_with(opt, [[[1.0, 1.0], [-1.0, 1.0]], [0.3, -0.3], [-0.2, 0.2]])
    k1, b1, g1 = (p.detach().clone() for p in (kernel, bias, gain))
    m_kernel, m_bias, m_gain = (opt.state[p]["exp_avg"].clone() for p in (kernel, bias, gain))

    step_with(opt, [[[-2.0, 1.0], [-1.0, 1.0]], [float("inf"), 1.0], [0.5, float("nan")]])
    assert torch.allclose(bias.detach(), b1 * 0.99)
    assert torch.allclose(gain.detach(), (g1 - 1) * 0.99 + 1)
    assert torch.equal(opt.state[bias]["exp_avg"], m_bias)
    assert torch.equal(opt.state[gain]["exp_avg"], m_gain)
    # The kernel's gradient is finite: it takes an ordinary step in the same call.
    m2 = 0.9 * m_kernel + 0.1 * torch.tensor([[-2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(opt.state[kernel]["exp_avg"], m2)
    assert torch.allclose(kernel.detach(), k1 - 0.01 * k1.pow(2).mean().sqrt() * (m2.sign() + 0.01 * k1))


def test_tiger_accumulates_k_micro_batches_in_the_momentum():
    beta, lr, k = 0.8, 0.1, 2
    theta = param([0.3, -0.7, 0.2])
    opt = Tiger([{"params": [theta], "weight_decay": 0.0}], lr=lr, beta=beta, grad_accum_steps=k)
    grads = [torch.tensor(g, dtype=torch.float64) for g in
             ([1.0, -1.0, 0.2], [-3.0, 0.5, 0.2], [0.4, 0.4, -1.0], [0.1, -2.0, 0.6])]
    m, expected = torch.zeros(3, dtype=torch.float64), theta.detach().clone()
    for t, g in enumerate(grads, start=1):
        chi = 1.0 if (t - 1) % k == 0 else 0.0
        m = ((beta - 1) * chi + 1) * m + (1 - beta) * g / k
        if t % k == 0:
            expected = expected - 0.5 * lr * m.sign()
        step_with(opt, [g])
        assert torch.allclose(opt.state[theta]["exp_avg"], m), t
        assert torch.allclose(theta.detach(), expected), t
    # θ moved only at t = 2 and 4; at t = 2, sign(m) = sign(g1 + g2) = [-1, -1, 1].
    assert torch.allclose(expected, torch.tensor([0.3, -0.7, 0.2], dtype=torch.float64)
                          - 0.05 * torch.tensor([-1.0, -1.0, 1.0]) - 0.05 * m.sign())


def test_tiger_with_k_micro_batches_equals_k_1_on_their_mean():
    torch.manual_seed(1)
    a = param(torch.randn(4, 3).tolist())
    b = param(a.tolist())
    accumulating, plain = Tiger([a], lr=0.05, grad_accum_steps=2), Tiger([b], lr=0.05)
    for _ in range(3):
        g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
        step_with(accumulating, [g1])
        step_with(accumulating, [g2])
        step_with(plain, [(g1 + g2) / 2])
    assert torch.allclose(a, b)


def tiny_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[0.5], [-1.0], [0.25], [0.0]]) + 0.15
    return model, x, y


def tiger_per_parameter_step(optimizer: Tiger) -> None:
    """Tiger's update one parameter at a time (the optimizer's earlier implementation), the reference its
    multi-tensor step must reproduce."""
    for group in optimizer.param_groups:
        beta, k, s = group["beta"], group["grad_accum_steps"], group["shrink_ratio"]
        centre = 1.0 if group["norm_gain"] else 0.0
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:
                state["step"], state["exp_avg"] = 0, torch.zeros_like(p)
            state["step"] += 1
            t, m = state["step"], state["exp_avg"]
            finite = torch.isfinite(p.grad).all()
            decay = beta if (t - 1) % k == 0 else 1.0
            m.copy_(torch.where(finite, decay * m + (1 - beta) / k * p.grad, m))
            if t % k == 0:
                if p.ndim < 2 or group.get("vector") or group["norm_gain"]:
                    lr, wd = 0.5 * group["lr"], 0.0
                elif group.get("embedding"):
                    lr, wd = group["lr"] * p.pow(2).mean(-1, keepdim=True).sqrt(), group["weight_decay"]
                else:
                    lr, wd = group["lr"] * p.pow(2).mean().sqrt(), group["weight_decay"]
                updated = p - lr * (torch.sign(m) + wd * p)
            else:
                updated = p
            p.copy_(torch.where(finite, updated, (p - centre) * s + centre))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 2])
def test_tiger_multi_tensor_step_equals_the_per_parameter_update(k, device):
    """Kernels, biases and norm gains over 6 steps, one parameter missing a gradient at one step and another
    with a NaN at one step: every parameter and moment equals the per-parameter update's to float32 rounding."""
    torch.manual_seed(0)
    shapes = [(8, 4), (4,), (3, 5, 2), (6,)]
    start = [torch.randn(shape, device=device) for shape in shapes]
    models = [[nn.Parameter(t.clone()) for t in start] for _ in range(2)]
    opts = [Tiger([{"params": ps[:3]}, {"params": ps[3:], "norm_gain": True, "weight_decay": 0.0}],
                  lr=0.05, weight_decay=0.1, grad_accum_steps=k) for ps in models]
    for step in range(6):
        grads = [torch.randn(shape, device=device) for shape in shapes]
        if step == 2:
            grads[2][1, 1, 0] = float("nan")
        if step == 4:
            grads[1] = None
        for ps in models:
            for p, g in zip(ps, grads):
                p.grad = None if g is None else g.clone()
        opts[0].step()
        with torch.no_grad():
            tiger_per_parameter_step(opts[1])
    for a, b in zip(*models):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        assert torch.allclose(opts[0].state[a]["exp_avg"], opts[1].state[b]["exp_avg"], rtol=1e-6, atol=1e-7)
        assert opts[0].state[a]["step"] == opts[1].state[b]["step"]
    assert not torch.equal(models[0][0], start[0])


@pytest.mark.parametrize("settings", [
    {"lr": 1e-3, "relative_step": False, "scale_parameter": False, "warmup_init": False, "weight_decay": 0.01},
    {"lr": 5e-4, "relative_step": False, "scale_parameter": True, "warmup_init": False, "beta1": 0.9},
    {"lr": None, "relative_step": True, "scale_parameter": True, "warmup_init": True, "beta1": 0.5,
     "weight_decay": 0.1}], ids=["adafactor.yaml", "adafactor_scaled.yaml", "relative_step"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adafactor_equals_transformers_adafactor(settings, dtype, device):
    """Matrices, a 3-D tensor and vectors over 5 steps, one of them missing a gradient at one step: parameters and
    every state tensor equal transformers' per-parameter Adafactor."""
    from transformers.optimization import Adafactor as Reference
    torch.manual_seed(0)
    shapes = [(8, 4), (4,), (3, 5, 2), (6,)]
    start = [torch.randn(shape).to(device, dtype) for shape in shapes]
    models = [[nn.Parameter(t.clone()) for t in start] for _ in range(2)]
    opts = [Adafactor(models[0], **settings), Reference(models[1], **settings)]
    for step in range(5):
        grads = [torch.randn(shape).to(device, dtype) for shape in shapes]
        grads[1] = None if step == 2 else grads[1]
        for ps in models:
            for p, g in zip(ps, grads):
                p.grad = None if g is None else g.clone()
        for opt in opts:
            opt.step()
    for a, b in zip(*models):
        assert torch.allclose(a.float(), b.float(), rtol=1e-6, atol=1e-8)
        for key, value in opts[1].state[b].items():
            assert torch.allclose(torch.as_tensor(opts[0].state[a][key]).float(), torch.as_tensor(value).float(),
                                  rtol=1e-6, atol=1e-8), key
    assert opts[0].state[models[0][0]]["exp_avg_sq_row"].min() > 0   # the second moment was updated


def test_adamw_yaml_is_torch_adamw_at_the_backbone_lr():
    cfg = compose_config("optimizer=adamw", "backbone=pretrained")
    model, _, _ = tiny_regression()
    opt = instantiate(cfg.optimizer)(parameter_groups(model))
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["lr"] == 2e-5 and opt.param_groups[0]["weight_decay"] == 0.01
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups[1:])


def test_lion_yaml_takes_a_tenth_of_the_lr_and_ten_times_the_weight_decay():
    for backbone in ("scratch_tiny", "pretrained"):
        adamw, lion = (compose_config(f"optimizer={o}", f"backbone={backbone}").optimizer for o in ("adamw", "lion"))
        assert lion.lr == pytest.approx(adamw.lr / 10)
        assert lion.weight_decay == pytest.approx(adamw.weight_decay * 10)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_yaml_trains_a_tiny_model_with_task_module_groups(name):
    # The toy problem needs larger steps than fine-tuning; the yaml's lr still derives from this value.
    pinned = ["optimizer.lr=0.05"] if name == "adafactor_scaled" else []  # pins the post's lr, not finetune_lr's
    cfg = compose_config(f"optimizer={name}", "backbone.finetune_lr=0.05", *pinned)
    model, x, y = tiny_regression()
    groups = parameter_groups(model)
    assert [g.get("norm_gain", False) for g in groups] == [False, False, True]
    assert [g.get("vector", False) for g in groups] == [False, True, False]
    opt = instantiate(cfg.optimizer)(groups)
    assert isinstance(opt, torch.optim.Optimizer) and len(opt.param_groups) == 3

    def loss():
        return nn.functional.mse_loss(model(x), y)

    initial = loss().item()
    for _ in range(50):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.25 * initial, name


def lr_factors(scheduler, num_training_steps, steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = scheduler(opt, num_training_steps=num_training_steps)
    out = {}
    for step in range(max(steps) + 1):
        out[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return [out[s] for s in steps]


def test_constant_and_linear_warmup():
    assert lr_factors(constant, 100, [0, 50, 99]) == [1.0, 1.0, 1.0]
    assert lr_factors(linear_warmup, 100, [0, 9, 10, 55, 100]) == pytest.approx([0.0, 0.9, 1.0, 0.5, 0.0])


def test_library_schedules_on_20_steps_follow_their_formulas():
    """w = ⌊0.2·20⌋ = 4. Warmup is transformers' step/w: 0, .25, .5, .75, then 1 at step 4. (Before they wrapped
    transformers, ours warmed up as (step + 1)/w: .25, .5, .75, 1, 1, one step ahead; from step w on they agree.)"""
    T, w = 20, 4
    steps = range(T + 1)
    warmup = [s / w for s in range(w)]
    linear = warmup + [(T - s) / (T - w) for s in range(w, T + 1)]

    def cosine_to(m):
        return warmup + [m + (1 - m) * (1 + math.cos(math.pi * (s - w) / (T - w))) / 2 for s in range(w, T + 1)]

    assert linear[:6] == [0.0, 0.25, 0.5, 0.75, 1.0, 0.9375] and linear[12] == 0.5 and linear[T] == 0.0
    assert cosine_to(0.1)[12] == pytest.approx(0.55) and cosine_to(0.1)[T] == pytest.approx(0.1)
    assert lr_factors(partial(linear_warmup, warmup_ratio=0.2), T, steps) == pytest.approx(linear)
    assert lr_factors(partial(cosine, warmup_ratio=0.2), T, steps) == pytest.approx(cosine_to(0.0))
    assert lr_factors(partial(cosine, warmup_ratio=0.2, min_ratio=0.1), T, steps) == pytest.approx(cosine_to(0.1))
    assert lr_factors(constant, T, steps) == [1.0] * (T + 1)


def test_cosine_warms_up_then_follows_half_a_cosine_to_min_ratio():
    def sched(opt, num_training_steps):
        return cosine(opt, num_training_steps, warmup_ratio=0.1, min_ratio=0.1)

    factors = lr_factors(sched, 100, [0, 4, 9, 10, 33, 55, 100])     # past step T transformers' cosine turns up
    middle = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 23 / 90))
    assert factors == pytest.approx([0.0, 0.4, 0.9, 1.0, middle, 0.55, 0.1])
    assert lr_factors(cosine, 100, [100]) == pytest.approx([0.0])


def test_piecewise_linear_interpolates_fractions_of_training():
    def sched(opt, num_training_steps):
        return piecewise_linear(opt, num_training_steps, schedule=[[1.0, 0.0], [0.1, 1.0], [0.5, 0.2]])

    factors = lr_factors(sched, 200, [0, 10, 20, 60, 100, 150, 200, 250])
    assert factors == pytest.approx([0.0, 0.5, 1.0, 0.6, 0.2, 0.1, 0.0, 0.0])

    def held(opt, num_training_steps):
        return piecewise_linear(opt, num_training_steps, schedule=[[0.2, 0.5], [0.6, 1.0]], from_zero=False)

    assert lr_factors(held, 100, [0, 20, 40, 60, 90]) == pytest.approx([0.5, 0.5, 0.75, 1.0, 1.0])
    with pytest.raises(ValueError, match="same fraction"):
        piecewise_linear(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, schedule=[[0.5, 1], [0.5, 0]])


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_yaml_instantiates_with_its_defaults(name):
    expected = {"constant": [1.0, 1.0, 1.0, 1.0], "linear_warmup": [0.0, 1.0, 0.5, 0.0],
                "cosine": [0.0, 1.0, 0.5, 0.0], "piecewise_linear": [1.0, 0.9, 0.45, 0.0]}
    scheduler = instantiate(compose_config(f"scheduler={name}").scheduler)
    assert lr_factors(scheduler, 100, [0, 10, 55, 100]) == pytest.approx(expected[name])


def test_tiger_steps_embedding_rows_by_their_own_rms_and_gau_scales_as_vectors_like_the_reference():
    """bojone/tiger: an embedding table's step is α·RMS of each row (not of the table); GAU's γ and β (2-D)
    step by α/2 with no weight decay, like biases. parameter_groups marks both; the per-parameter reference
    above (its earlier implementation, extended the same way) agrees with the multi-tensor step."""
    from lit_models.components.nn.attention import GatedAttentionUnit

    torch.manual_seed(0)
    model = nn.ModuleDict({"embed": nn.Embedding(6, 4), "gau": GatedAttentionUnit(4, key_size=8, expansion=1)})
    with torch.no_grad():
        model["embed"].weight.mul_(torch.arange(1, 7.0).unsqueeze(1))      # rows of very different scale
    groups = parameter_groups(model)
    by_flag = {flag: g for g in groups for flag in ("embedding", "vector") if g.get(flag)}
    assert by_flag["embedding"]["params"] == [model["embed"].weight]
    assert {id(model["gau"].gamma), id(model["gau"].beta)} <= {id(p) for p in by_flag["vector"]["params"]}
    twin = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = Tiger(groups, lr=0.1, beta=0.5, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt.step()
    table, sign = before["embed.weight"], torch.sign(0.5 * model["embed"].weight.grad)
    expected = table - 0.1 * table.pow(2).mean(-1, keepdim=True).sqrt() * (sign + 0.1 * table)
    torch.testing.assert_close(model["embed"].weight.detach(), expected)
    gamma = before["gau.gamma"]
    torch.testing.assert_close(model["gau"].gamma.detach(), gamma - 0.05 * torch.sign(model["gau"].gamma.grad))
    reference_model = nn.ModuleDict({"embed": nn.Embedding(6, 4), "gau": GatedAttentionUnit(4, key_size=8, expansion=1)})
    reference_model.load_state_dict(twin)
    reference = Tiger(parameter_groups(reference_model), lr=0.1, beta=0.5, weight_decay=0.1)
    for (_, p), (_, q) in zip(model.named_parameters(), reference_model.named_parameters()):
        q.grad = p.grad.clone()
    with torch.no_grad():
        tiger_per_parameter_step(reference)
    for (name, p), (_, q) in zip(model.named_parameters(), reference_model.named_parameters()):
        torch.testing.assert_close(p, q, msg=name)
