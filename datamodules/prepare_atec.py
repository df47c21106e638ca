"""Derive an ATEC train split from the raw competition file, without the pairs that valid/test already hold.

The senteval_cn ATEC.train.data is not always at hand, but the raw `atec/original/atec_nlp_sim_train.csv`
(`id<TAB>sentence1<TAB>sentence2<TAB>label`) is. The senteval_cn valid/test splits were re-split from that
same pool, so about 15k of its pairs occur in them; training on those would leak test pairs into training.
This step drops every raw pair that occurs in valid or test (in either order) and writes the rest as
`ATEC.train.data` in senteval_cn form, where `data=atec` looks for it given the same data folder:
paths.derived_dir/atec, i.e. $HUB_DERIVED_DIR/atec, else <data dir>/derived/atec.

    python -m datamodules.prepare_atec [--data-dir DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from datamodules.sts import parse_label, read_pairs
from text.files import DataFormatError, find_file, numbered_lines

RAW = "atec/original/atec_nlp_sim_train.csv"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pair_key(first: str, second: str) -> frozenset:
    return frozenset((first.strip(), second.strip()))


def read_raw(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        try:
            if len(fields) != 4:
                raise ValueError
            parse_label(fields[3], 1)
        except ValueError:
            raise DataFormatError(f"{path}:{number}: expected 'id<TAB>sentence1<TAB>sentence2<TAB>label(0/1)', "
                                  f"got {line[:120]!r}") from None
        rows.append((fields[1], fields[2], fields[3].strip()))
    return rows


def derive_train(data_dir: Path, out: Path) -> dict[str, int]:
    """Write the leak-free train split to `out`; returns the counts it printed."""
    raw_path = find_file(data_dir / RAW)
    if raw_path is None:
        raise FileNotFoundError(f"{data_dir / RAW} (or .xz/.gz) not found: the raw ATEC file is published at "
                                "https://github.com/IceFlameWorm/NLP_Datasets/tree/master/ATEC")
    held_out = set()
    for split in ("valid", "test"):
        path = find_file(data_dir / f"atec/ATEC.{split}.data")
        if path is None:
            raise FileNotFoundError(f"{data_dir}/atec/ATEC.{split}.data (or .xz/.gz) not found")
        pairs = read_pairs(path, label_max=1)
        held_out.update(pair_key(a, b) for a, b in zip(pairs.first, pairs.second))
    rows = read_raw(raw_path)
    kept = [row for row in rows if pair_key(row[0], row[1]) not in held_out]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(f"{a}\t{b}\t{label}\n" for a, b, label in kept), encoding="utf-8")
    os.replace(tmp, out)
    counts = {"raw": len(rows), "in_valid_or_test": len(rows) - len(kept), "train": len(kept)}
    print(f"ATEC train: {counts['raw']} raw pairs, {counts['in_valid_or_test']} dropped (they occur in "
          f"valid/test), {counts['train']} written to {out}")
    return counts


def default_data_dir() -> Path:
    """paths.data_dir's default (conf/paths/default.yaml): $HUB_DATA_DIR, else the checkout's data/."""
    return Path(os.environ.get("HUB_DATA_DIR", PROJECT_ROOT / "data"))


def default_out(data_dir: Path) -> Path:
    """Where `data=atec` reads train with paths.data_dir=data_dir: paths.derived_dir/atec/ATEC.train.data, where
    derived_dir is $HUB_DERIVED_DIR, else data_dir/derived (conf/paths/default.yaml, conf/data/atec.yaml)."""
    derived = Path(os.environ.get("HUB_DERIVED_DIR", data_dir / "derived"))
    return derived / "atec" / "ATEC.train.data"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $HUB_DATA_DIR, else <checkout>/data "
                                                                    "(as paths.data_dir)")
    parser.add_argument("--out", type=Path, default=None, help="default: where data=atec reads it, "
                                                               "$HUB_DERIVED_DIR/atec/ATEC.train.data "
                                                               "(HUB_DERIVED_DIR defaults to <data dir>/derived)")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    out = (args.out or default_out(data_dir)).absolute()
    derive_train(data_dir, out)
    if args.out is None:
        print(f"data=atec reads it with paths.data_dir={data_dir.absolute()} (or HUB_DATA_DIR set to it)")
    return out


if __name__ == "__main__":
    main()
