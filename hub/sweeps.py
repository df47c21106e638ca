"""W&B sweep specs (sweeps/*.yaml) as Hydra runs: check them, list their configurations, run them without W&B.

    python -m hub.sweeps sweeps/loss.yaml [--dry-run] [OVERRIDE ...]

A grid becomes `python run.py -m key=v1,v2 ...` (Hydra's basic sweeper); a bayes/random search becomes
`python run.py hparams_search=optuna ...` with each distribution as an Optuna search space.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import yaml

from hub.config import PROJECT_ROOT

OPTUNA_SPACES = {  # W&B distribution -> Hydra Optuna sweeper syntax
    "uniform": "interval({min}, {max})",
    "log_uniform_values": "tag(log, interval({min}, {max}))",
    "int_uniform": "range({min}, {max})",
    "q_uniform": "interval({min}, {max})",
}


def load(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def violations(spec: dict) -> list[str]:
    """W&B's own schema check of a sweep spec (the `sweeps` package, as `wandb sweep` uses it)."""
    import sweeps

    return list(sweeps.schema_violations_from_proposed_config(spec))


def hydra_value(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def grid(spec: dict) -> list[list[str]]:
    """Every configuration of the spec as Hydra overrides; a distribution contributes its min and max."""
    axes = []
    for key, param in spec["parameters"].items():
        if "value" in param:
            values = [param["value"]]
        elif "values" in param:
            values = param["values"]
        else:
            values = [param["min"], param["max"]]
        axes.append([f"{key}={hydra_value(v)}" for v in values])
    return [list(combination) for combination in itertools.product(*axes)]


def run_command(spec: dict, extra: list[str] = ()) -> list[str]:
    """The `python run.py ...` command that runs the sweep as a Hydra multirun."""
    fixed, swept, searched = [], [], []
    for key, param in spec["parameters"].items():
        if "value" in param:
            fixed.append(f"{key}={hydra_value(param['value'])}")
        elif "values" in param:
            values = ",".join(hydra_value(v) for v in param["values"])
            swept.append(f"{key}={values}" if spec["method"] == "grid" else
                         f"hydra.sweeper.params.{key}=choice({values})")
        else:
            searched.append(f"hydra.sweeper.params.{key}=" + OPTUNA_SPACES[param.get("distribution", "uniform")]
                            .format(**param))
    command = [sys.executable, str(PROJECT_ROOT / "run.py")]
    if spec["method"] == "grid":
        return command + ["-m", *fixed, *swept, *extra]
    metric = spec["metric"]
    return command + ["hparams_search=optuna", f"optimized_metric={metric['name']}",
                      f"hydra.sweeper.direction={metric['goal']}", *fixed, *swept, *searched, *extra]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    spec = load(argv.pop(0))
    dry = "--dry-run" in argv
    problems = violations(spec)
    if problems:
        print("not a valid W&B sweep: " + "; ".join(problems), file=sys.stderr)
        return 2
    command = run_command(spec, [a for a in argv if a != "--dry-run"])
    print(" ".join(command))
    return 0 if dry else subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
