"""Finding and reading the official data files: plain or compressed, with errors that name file and line."""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from pathlib import Path
from typing import Iterator

COMPRESSED_SUFFIXES = ("", ".xz", ".gz")


class DataFormatError(ValueError):
    """A line of a data file does not have the expected form; the message starts with `file:line:`."""


class MissingSplitError(FileNotFoundError):
    """A configured split is not on disk; the message names every file looked for and the data's source."""


def candidates(path: Path) -> list[Path]:
    """The paths under which a data file may be stored: as is, or xz/gzip-compressed."""
    return [path.with_name(path.name + suffix) for suffix in COMPRESSED_SUFFIXES]


def find_file(path: str | Path) -> Path | None:
    return next((p for p in candidates(Path(path)) if p.is_file()), None)


def open_text(path: Path):
    """Open a text file, decompressing .xz/.gz; a UTF-8 byte-order mark is dropped."""
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8-sig", newline=None)


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for each non-blank line."""
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object raises
    DataFormatError `file:line: ...`."""
    for number, line in numbered_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{number}: not valid JSON ({error.msg}): {line[:120]!r}") from None
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {line[:120]!r}")
        yield number, row


def write_json_lines(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line, UTF-8 unescaped (as the CLUE submission files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
