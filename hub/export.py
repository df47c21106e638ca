"""Export a trained encoder as an ordinary folder that loads without this project:

    python -m hub.export outputs/runs/2026-12-07/13-23-07-759845 exported/stsb-e5      # a run folder
    python -m hub.export <run folder>/checkpoints/last.ckpt exported/x --format hf     # one of its checkpoints

task=bi_encoder → sentence-transformers (`SentenceTransformer(OUT).encode(texts)` = the hub's embeddings): the
encoder, the run's pooling as sentence-transformers modules, the text prefix as the default prompt, data.max_length
as max_seq_length, and the run's whitening.safetensors as a Dense layer, (x − μ)·W. task=classifier with
task.pooling=pooler → hf (`AutoModelForSequenceClassification`, e.g. BERT's softmax(W·tanh(W_p·h_cls + b_p) + b))
with id2label from the data's label names. Everything else is refused with the reason: a from-scratch backbone
(no Hugging Face class), a head the HF class would compute differently, another task.

The weights are those the run tested: best.ckpt (else last.ckpt), or with train=false the initial ones (ckpt_path
when set). The sentence-transformers files are written by hand, in the classic layout (modules.json,
sentence_bert_config.json, <i>_<Module>/config.json) that releases 3 to 6 load (tested with 6.3): exporting needs
no sentence-transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("sentence-transformers", "hf")
# pooling → sentence-transformers modules after the Transformer (see `pooling_modules`)
ST_POOLINGS = ("cls", "mean", "pooler", "first_last_avg")
EXPORTS = ("task=bi_encoder (sentence-transformers) and task=classifier with task.pooling=pooler (hf), "
           "on backbone=pretrained")


class ExportError(Exception):
    """What the user asked for cannot be exported; the message names why and what would work."""


@dataclass
class Source:
    """A run to export: its folder, composed config, the checkpoint of the weights (None: the initial ones) and
    its whitening.safetensors (None: none, or not fitted on these weights)."""

    folder: Path
    cfg: object
    choices: dict
    checkpoint: Path | None = None
    whitening: Path | None = None


# --- what to export ---------------------------------------------------------------------------------------

def locate(path: Path) -> tuple[Source, Path | None]:
    """The run of a run folder, or of a .ckpt inside one (`<run>/checkpoints/x.ckpt`: the backbone's config lives
    in the run's .hydra/config.yaml, not in the checkpoint), and that .ckpt."""
    if not path.exists():
        raise ExportError(f"{path}: no such run folder or checkpoint")
    if path.is_file():
        folder = path.resolve().parent.parent
        if not (folder / ".hydra" / "config.yaml").is_file():
            raise ExportError(f"{path}: a checkpoint outside its run folder (no {folder / '.hydra' / 'config.yaml'}); "
                              f"pass the run folder, or a checkpoint in its checkpoints/ folder")
        return Source(folder, run_config(folder), choices_of(folder)), path
    if not (path / ".hydra" / "config.yaml").is_file():
        hint = " (a multirun folder holds one run per numbered subfolder)" if any(path.glob("*/.hydra")) else ""
        raise ExportError(f"{path} is not a run folder: no .hydra/config.yaml{hint}; pass a folder that run.py wrote "
                          f"(outputs/runs/<date>/<time>) or one of its checkpoints")
    return Source(path, run_config(path), choices_of(path)), None


def choose_weights(source: Source, given: Path | None) -> None:
    """The checkpoint to export (`given`, else the one the run tested) and the whitening fitted on it."""
    tested = tested_checkpoint(source.folder, source.cfg)
    if given is None and tested is None and source.cfg.train:
        raise ExportError(f"{source.folder}: no checkpoints/best.ckpt or last.ckpt (the run stopped before its "
                          f"first checkpoint): export a run that finished an epoch")
    source.checkpoint = given or tested
    same = given is None or (tested is not None and given.resolve() == tested.resolve())
    whitening = source.folder / "whitening.safetensors"
    if whitening.is_file() and not same:
        print(f"hub.export: {whitening.name} was fitted with {tested.name if tested else 'the initial weights'}, "
              f"not {given.name}: exported without it", file=sys.stderr)
    source.whitening = whitening if whitening.is_file() and same else None


def run_config(folder: Path):
    from omegaconf import OmegaConf

    from hub.config import register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(folder)   # saved as ${hydra:runtime.output_dir}, unresolvable outside Hydra
    return cfg


def choices_of(folder: Path) -> dict:
    """The run's config-group choices (.hydra/hydra.yaml), for messages; {} when it has none."""
    import yaml

    hydra = folder / ".hydra" / "hydra.yaml"
    saved = yaml.safe_load(hydra.read_text(encoding="utf-8")) if hydra.is_file() else None
    return ((saved or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}


def tested_checkpoint(folder: Path, cfg) -> Path | None:
    """The weights the run tested: best.ckpt, else last.ckpt (no finite validation value: the final weights);
    with train=false ckpt_path, else None: the initial weights (or, trained, none written)."""
    if not cfg.train:
        return Path(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    return next((p for p in (folder / "checkpoints" / n for n in ("best.ckpt", "last.ckpt")) if p.is_file()), None)


def check_exportable(source: Source, fmt: str | None) -> tuple[type, str]:
    """(task class, format), refusing what has no exact counterpart before any weight is loaded."""
    from hub.config import name_of, resolve
    from lit_models.bi_encoder import BiEncoder
    from lit_models.classifier import Classifier

    cfg = source.cfg
    classes = resolve(cfg)
    task, backbone = (source.choices.get(group) or name_of(cfg, group) for group in ("task", "backbone"))
    if not issubclass(classes.task, (BiEncoder, Classifier)):
        raise ExportError(f"task={task} has no export: {why_not(classes.task)}. Exports: {EXPORTS}")
    if getattr(classes.backbone, "TAKES_ATTENTION", False):
        raise ExportError(f"backbone={backbone} is our own Transformer (lit_models/components/nn), which no Hugging "
                          f"Face class loads: exports are for backbone=pretrained runs")
    natural = "sentence-transformers" if issubclass(classes.task, BiEncoder) else "hf"
    if fmt not in (None, natural):
        also = "; its folder's root is an AutoModel folder too" if natural == "sentence-transformers" else ""
        raise ExportError(f"task={task} exports as --format {natural}, not {fmt}{also}")
    pooling = cfg.task.get("pooling")
    if natural == "hf" and pooling != "pooler":
        raise ExportError(f"task=classifier with task.pooling={pooling} feeds the pooled vector to its Linear head, "
                          f"while AutoModelForSequenceClassification puts BERT's pooler tanh(W_p·h_cls + b_p) "
                          f"before its classifier: it would compute other logits. Exports: {EXPORTS}")
    if natural == "sentence-transformers" and pooling not in ST_POOLINGS:
        raise ExportError(f"task.pooling={pooling} has no sentence-transformers module (exports: {ST_POOLINGS})")
    if natural == "hf" and not cfg.train and not cfg.get("ckpt_path"):
        raise ExportError("a train=false classifier has an untrained head (drawn by init): export a trained run")
    return classes.task, natural


def why_not(task_class: type) -> str:
    from lit_models.cross_encoder import CrossEncoder

    if issubclass(task_class, CrossEncoder):
        return ("its score w·h_cls + b reads the [CLS] vector with no pooler, while "
                "AutoModelForSequenceClassification puts one (tanh(W_p·h_cls + b_p)) before its classifier, "
                "so it would compute other scores")
    return "its head has no Hugging Face counterpart"


# --- the model --------------------------------------------------------------------------------------------

def load_model(source: Source, task_class: type):
    """The run's task module in eval mode: its checkpoint's weights, else the initial ones rebuilt from the
    config (train=false: the pretrained backbone)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from text.info import DataInfo

    cfg = source.cfg
    try:
        parts = {"backbone": instantiate(cfg.backbone), "loss": instantiate(cfg.loss),
                 "optimizer": instantiate(cfg.optimizer), "scheduler": instantiate(cfg.scheduler),
                 "init": instantiate(cfg.init)}
        if source.checkpoint is None:
            return instantiate(cfg.task, **parts, data=DataInfo(str(cfg.data.get("name", "data"))),
                               _convert_="object").eval()
    except InstantiationException as error:   # the hub's own checks raise ValueError (ConfigError) or FileNotFoundError
        if not isinstance(error.__cause__, (ValueError, FileNotFoundError)):
            raise
        raise ExportError(f"cannot rebuild the run's model (backbone.name_or_path={cfg.backbone.name_or_path}): "
                          f"{first_line(error.__cause__)}") from None
    try:
        model = task_class.load_from_checkpoint(source.checkpoint, map_location="cpu", weights_only=True, **parts)
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise ExportError(f"{source.checkpoint}: not a checkpoint of this run's task "
                          f"({first_line(error)})") from None
    return model.eval()


def first_line(error: BaseException) -> str:
    """The error's first sentence: torch and transformers explain at length what a user error here does not need."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ")[0].rstrip(".")


def encoder_with_pooler(model, cfg):
    """The backbone's Hugging Face model with its pooler back. The hub drops it unless pooling=pooler; the export
    puts back the pretrained one (untouched by training), so the folder loads with no newly drawn weights."""
    from transformers import AutoModel

    from lit_models.components.backbones import resolve_pretrained

    encoder = model.backbone.model
    if getattr(encoder, "pooler", False) is None:
        pooler = model.backbone.pooler
        if pooler is None:
            source = resolve_pretrained(cfg.backbone.name_or_path, cfg.backbone.get("local_dir"))
            pooler = AutoModel.from_pretrained(source).pooler
        encoder.pooler = pooler
    return encoder


# --- sentence-transformers --------------------------------------------------------------------------------

@dataclass
class Module:
    """One sentence-transformers module after the Transformer: its class (sentence_transformers.models.<kind>),
    config.json and weights."""

    kind: str
    config: dict
    weights: dict


def pooling_config(width: int, mode: str) -> dict:
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    return {"word_embedding_dimension": width, **{f"pooling_mode_{m}": m == mode for m in modes},
            "include_prompt": True}   # the hub's mean runs over the prefix's tokens too


def dense(weight, bias, activation: str) -> Module:
    """y = activation(x·Wᵀ + b), `activation` a torch.nn class path."""
    config = {"in_features": weight.shape[1], "out_features": weight.shape[0], "bias": True,
              "activation_function": activation}
    return Module("Dense", config, {"linear.weight": weight, "linear.bias": bias})


def pooling_modules(model) -> list[Module]:
    """lit_models/components/pooling.py in sentence-transformers modules: cls and mean are Pooling modes; pooler is
    cls then Dense(tanh) with the pooler's weights; first_last_avg is WeightedLayerPooling of the hidden states
    1..L with weights (1, 0, …, 0, 1) — (h_1 + h_L)/2 — then mean."""
    width, pooling = model.backbone.hidden_size, model.pooling
    if pooling in ("cls", "pooler"):
        modules = [Module("Pooling", pooling_config(width, "cls_token"), {})]
        if pooling == "pooler":
            linear = model.backbone.pooler.dense
            modules.append(dense(linear.weight, linear.bias, "torch.nn.modules.activation.Tanh"))
        return modules
    if pooling == "first_last_avg":
        import torch

        layers = model.backbone.model.config.num_hidden_layers
        weights = torch.zeros(layers)
        weights[[0, -1]] = 1.0
        layer_pooling = Module("WeightedLayerPooling", {"word_embedding_dimension": width, "layer_start": 1,
                                                        "num_hidden_layers": layers}, {"layer_weights": weights})
        return [layer_pooling, Module("Pooling", pooling_config(width, "mean_tokens"), {})]
    return [Module("Pooling", pooling_config(width, "mean_tokens"), {})]


def whitening_module(path: Path, width: int) -> Module:
    """(x − μ)·W = x·W − μ·W: a Dense with weight Wᵀ and bias −μ·W, no activation."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    mean, kernel = tensors.get("mean"), tensors.get("kernel")
    if mean is None or kernel is None or mean.shape != (width,) or kernel.ndim != 2 or kernel.shape[0] != width:
        raise ExportError(f"{path}: expected tensors mean ({width}) and kernel ({width} × k), got "
                          f"{ {k: tuple(v.shape) for k, v in tensors.items()} }")
    kernel = kernel.double()
    return dense(kernel.T.float(), (-mean.double() @ kernel).float(), "torch.nn.modules.linear.Identity")


def write_sentence_transformers(model, source: Source, out: Path, name: str) -> str:
    """The encoder and tokenizer at the root (an AutoModel folder too), then one subfolder per module."""
    cfg, prefix, max_length = source.cfg, model.backbone.text_prefix, int(source.cfg.data.max_length)
    modules = pooling_modules(model)
    if source.whitening is not None:
        modules.append(whitening_module(source.whitening, model.backbone.hidden_size))
    encoder = encoder_with_pooler(model, cfg)
    if model.pooling == "first_last_avg":   # the Transformer module hands WeightedLayerPooling every layer
        encoder.config.output_hidden_states = True
    encoder.save_pretrained(out)
    save_tokenizer(model.backbone.tokenizer, max_length, out)
    write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    entries = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    for i, module in enumerate(modules, start=1):
        entries.append({"idx": i, "name": str(i), "path": f"{i}_{module.kind}",
                        "type": f"sentence_transformers.models.{module.kind}"})
        write_module(out / f"{i}_{module.kind}", module)
    write_json(out / "modules.json", entries)
    # the hub prefixes every text, both sides of a pair: the same prompt for queries and documents, by default
    prompts = {"prompts": {"query": prefix, "document": prefix}, "default_prompt_name": "query"} if prefix else {}
    write_json(out / "config_sentence_transformers.json", {**prompts, "similarity_fn_name": "cosine"})
    chain = " → ".join(["Transformer"] + [m.kind for m in modules])
    summary = (f"sentence-transformers: {chain}; pooling={model.pooling}, prompt {prefix!r}, max_seq_length "
               f"{max_length}{', whitening ' + str(source.whitening.name) if source.whitening else ''}")
    write_readme(out, source, summary, f'SentenceTransformer("{name}").encode(texts)', [
        f"`encode` prepends {prefix!r} (the default prompt) as the hub does to every text." if prefix else
        "The hub adds no text prefix.",
        "Compare embeddings by cosine similarity, as the hub's evaluation does (they are not normalized).",
        "The folder's root is also a Hugging Face AutoModel folder (the encoder alone, without the pooling)."])
    return summary


def write_module(folder: Path, module: Module) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    write_json(folder / "config.json", module.config)
    if module.weights:
        save_file({k: v.detach().float().contiguous() for k, v in module.weights.items()},
                  str(folder / "model.safetensors"))


# --- Hugging Face sequence classification -----------------------------------------------------------------

def write_hf_classifier(model, source: Source, out: Path, name: str) -> str:
    """AutoModelForSequenceClassification with the hub's encoder, pooler and Linear head, checked on a probe
    batch to give the hub's logits."""
    import torch
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    encoder, head = encoder_with_pooler(model, source.cfg), model.head[-1]
    names = model.data_info.label_names or tuple(f"LABEL_{i}" for i in range(head.out_features))
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.architectures = None
    config.id2label, config.label2id = dict(enumerate(names)), {label: i for i, label in enumerate(names)}
    config.classifier_dropout = model.dropout
    hf = AutoModelForSequenceClassification.from_config(config).eval()
    base, classifier = hf.base_model, getattr(hf, "classifier", None)
    if not isinstance(classifier, nn.Linear) or getattr(base, "pooler", None) is None:
        raise ExportError(f"{type(hf).__name__} is not pooler → Linear, the hub's head: no exact export")
    base.load_state_dict(encoder.state_dict())
    classifier.load_state_dict(head.state_dict())
    tokenizer, prefix = model.backbone.tokenizer, model.backbone.text_prefix
    probe = tokenizer([prefix + "今天天气不错", prefix + "这是一条新闻标题"], padding=True, return_tensors="pt")
    probe = {"input_ids": probe["input_ids"], "attention_mask": probe["attention_mask"]}
    with torch.no_grad():
        ours, theirs = model(probe), hf(**probe).logits
    if not torch.allclose(ours, theirs, rtol=0, atol=1e-5):
        raise ExportError(f"{type(hf).__name__} gives other logits than the hub's head (max difference "
                          f"{(ours - theirs).abs().max().item():.2e}): no exact export")
    max_length = int(source.cfg.data.max_length)
    hf.save_pretrained(out)
    save_tokenizer(tokenizer, max_length, out)
    summary = f"hf: {type(hf).__name__}, {len(names)} labels, max_length {max_length}, prefix {prefix!r}"
    write_readme(out, source, summary, f'AutoModelForSequenceClassification.from_pretrained("{name}")', [
        f"Prepend {prefix!r} to each input, as the hub does (an HF folder has no place for a prefix)." if prefix
        else "The hub adds no text prefix.",
        f"Truncate at {max_length} tokens (the tokenizer's model_max_length: `truncation=True`).",
        "Text pairs: the hub builds cls a sep b sep with every segment id 0, cutting the longer text first "
        "(datamodules/clue.py `join_pair`); a tokenizer's own pair encoding can differ."])
    return summary


# --- files ------------------------------------------------------------------------------------------------

def save_tokenizer(tokenizer, max_length: int, out: Path) -> None:
    """The run's tokenizer, truncating at the run's data.max_length by default."""
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_readme(out: Path, source: Source, summary: str, load: str, notes: list[str]) -> None:
    weights = source.checkpoint or "the initial weights (train=false)"
    lines = [f"# Exported from {source.folder}", "", f"Weights: {weights}. {summary}.", "", f"Load: `{load}`", "",
             *[f"- {note}" for note in notes], ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise ExportError(f"OUT {out} is {what}: name a new or empty folder")


def write_folder(out: Path, write) -> str:
    """`write(folder)` into a temporary sibling, renamed to OUT when complete: a failed export leaves no OUT."""
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        summary = write(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export(path: Path, out: Path, fmt: str | None = None) -> str:
    """Check OUT, find the run, refuse what has no exact export, then load the weights and write OUT."""
    check_out(out)
    source, given = locate(path)
    task_class, fmt = check_exportable(source, fmt)
    choose_weights(source, given)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()   # a bar per load and save: noise in a one-shot command
    model = load_model(source, task_class)
    writer = write_sentence_transformers if fmt == "sentence-transformers" else write_hf_classifier
    return write_folder(out, lambda folder: writer(model, source, folder, str(out)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hub.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run folder of run.py, or a .ckpt in its checkpoints/")
    parser.add_argument("out", type=Path, help="the folder to write (new or empty)")
    parser.add_argument("--format", choices=FORMATS, help="default: sentence-transformers for task=bi_encoder, "
                                                          "hf for task=classifier")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = export(args.source, args.out, args.format)
    except ExportError as error:
        print(f"hub.export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
