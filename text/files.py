"""Finding and reading the official data files: plain or compressed, with errors that name file and line."""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import zlib
from pathlib import Path
from typing import Iterator

COMPRESSED_SUFFIXES = ("", ".xz", ".gz")
OPENERS = {".xz": lzma.open, ".gz": gzip.open}
# What a truncated or damaged .xz/.gz raises while being read (EOFError: the stream ends too early).
COMPRESSION_ERRORS = (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error)


class DataFormatError(ValueError):
    """A line of a data file does not have the expected form; the message starts with `file:line:`."""


class EmptySplitError(DataFormatError):
    """A split was read and holds no examples: training on it would fail deep in torch (train) or pick no
    checkpoint at all (valid), so it stops the run while the data is read."""


class MissingSplitError(FileNotFoundError):
    """A configured split is not on disk; the message names every file looked for and the data's source."""


def candidates(path: Path) -> list[Path]:
    """The paths under which a data file may be stored: as is, or xz/gzip-compressed."""
    return [path.with_name(path.name + suffix) for suffix in COMPRESSED_SUFFIXES]


def find_file(path: str | Path) -> Path | None:
    return next((p for p in candidates(Path(path)) if p.is_file()), None)


def open_text(path: Path):
    """Open a text file, decompressing .xz/.gz; a UTF-8 byte-order mark is dropped. Read it through
    `numbered_lines`/`read_text` to get errors that name the file."""
    return OPENERS.get(path.suffix, open)(path, "rt", encoding="utf-8-sig", newline=None)


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for each non-blank line. Bytes that are not
    UTF-8 and truncated or corrupt compressed data raise DataFormatError naming the file."""
    number = 0
    try:
        with open_text(path) as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except COMPRESSION_ERRORS as error:
        raise damaged(path, error, number) from None


def read_text(path: Path) -> str:
    """The whole file as text (decompressed, BOM dropped, universal newlines), with the errors of
    `numbered_lines`."""
    try:
        with open_text(path) as f:
            return f.read()
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except COMPRESSION_ERRORS as error:
        raise damaged(path, error, lines_readable(path)) from None


def load_json(path: Path):
    """A file holding one JSON value; invalid JSON raises DataFormatError `file:line:` with column and byte."""
    raw = read_text(path)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        byte = byte_at(path, error.lineno, error.colno)
        raise DataFormatError(f"{path}:{error.lineno}: invalid JSON at column {error.colno} "
                              f"({where_byte(path, byte)}): {error.msg}") from None


def open_bytes(path: Path):
    return OPENERS.get(path.suffix, open)(path, "rb")


def where_byte(path: Path, offset: int) -> str:
    """`byte N`, saying so when N counts the decompressed data rather than the file's own bytes."""
    return f"byte {offset}" + (" of the decompressed data" if path.suffix in OPENERS else "")


def byte_at(path: Path, line: int, column: int) -> int:
    """The byte offset of a 1-based (line, column) of the decoded text (lines end at LF; a BOM counts)."""
    offset = 0
    with open_bytes(path) as f:
        for number, raw in enumerate(f, start=1):
            if number == line:
                bom = 3 if number == 1 and raw.startswith(b"\xef\xbb\xbf") else 0
                return offset + bom + len(raw[bom:].decode("utf-8")[:column - 1].encode("utf-8"))
            offset += len(raw)
    return offset


def first_bad_byte(path: Path) -> tuple[int, int, int]:
    """(line, byte offset, byte) of the first byte that does not decode as UTF-8 (lines end at LF; no UTF-8
    character holds an LF byte, so line by line finds what decoding the whole file does)."""
    offset = 0
    with open_bytes(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, offset + error.start, line[error.start]
            offset += len(line)
    raise ValueError(f"{path}: every line decodes as UTF-8")


def not_utf8(path: Path) -> DataFormatError:
    """The error for a file that is not UTF-8: where its first bad byte is, and how to convert the file."""
    number, offset, byte = first_bad_byte(path)
    tool = {".xz": "xz", ".gz": "gzip"}.get(path.suffix)
    convert = (f"{tool} -dc {path} | iconv -f GBK -t UTF-8 > {path.with_suffix('')}" if tool
               else f"iconv -f GBK -t UTF-8 {path} > {path}.utf8")
    return DataFormatError(f"{path}:{number}: not UTF-8: byte 0x{byte:02x} at {where_byte(path, offset)} does not "
                           f"decode. The file is in another encoding (Chinese files are often GBK/GB18030); "
                           f"convert it to UTF-8, e.g. `{convert}`, and read the converted file")


def lines_readable(path: Path) -> int:
    """How many whole lines of a damaged compressed file decompress before the damage."""
    count = 0
    try:
        with open_bytes(path) as f:
            for line in f:
                count += line.endswith(b"\n")
    except COMPRESSION_ERRORS:
        pass
    return count


def damaged(path: Path, error: Exception, last_good_line: int) -> DataFormatError:
    """The error for compressed data that ends early or does not decompress."""
    kind = "truncated" if isinstance(error, EOFError) else "corrupt"
    tool = {".xz": "xz", ".gz": "gzip"}.get(path.suffix, "xz")
    after = f"after line {last_good_line}, the last good line" if last_good_line else "before its first line"
    module, name = type(error).__module__.lstrip("_"), type(error).__name__
    name = name if module == "builtins" else f"{module}.{name}"        # zlib.error, lzma.LZMAError
    return DataFormatError(f"{path}: {kind} {tool} data: decompression stops {after} ({name}: {error}). "
                           f"Fetch or compress the file again (`{tool} -t {path}` checks it)")


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
