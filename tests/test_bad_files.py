"""Bad input files fail with DataFormatError naming the file (and line or byte): another encoding, truncated
or corrupt compression, an empty split."""
import gzip
import json
import lzma
import re

import pytest

from datamodules.clue import read_label_file
from datamodules.cmrc2018 import read_cmrc2018
from datamodules.corpus import CorpusDataModule
from datamodules.lccc import LCCCDataModule, read_dialogues
from datamodules.multiple_choice import read_c3
from datamodules.sts import STSDataModule, read_pairs
from lit_models.components.backbones import ScratchBackbone
from tests.conftest import results_of, run_cli
from text.files import DataFormatError, EmptySplitError, load_json

GOOD = "好\t很好\t1\r\n"                       # 14 bytes in UTF-8; CRLF as some official files have
GBK_LINE = "你好\t很好\t1\n".encode("gbk")     # 你 = c4 e3 in GBK: 0xc4 starts no UTF-8 character here


@pytest.fixture(scope="module")
def tokenizer():
    return ScratchBackbone(hidden_size=32, num_layers=1, num_heads=2, ffn_size=64).tokenizer


def gbk_message(path, line: int, byte: int) -> str:
    return f"^{re.escape(str(path))}:{line}: not UTF-8: byte 0xc4 at byte {byte}"


def test_a_gbk_line_names_file_line_and_byte_and_how_to_convert(tmp_path):
    path = tmp_path / "X.train.data"
    path.write_bytes((GOOD * 2).encode() + GBK_LINE)
    with pytest.raises(DataFormatError, match=gbk_message(path, 3, 28)) as error:
        read_pairs(path, label_max=1)
    assert f"iconv -f GBK -t UTF-8 {path}" in str(error.value)


def test_a_gbk_line_in_an_xz_file_counts_bytes_of_the_decompressed_data(tmp_path):
    path = tmp_path / "X.train.data.xz"
    path.write_bytes(lzma.compress((GOOD * 2).encode() + GBK_LINE))
    with pytest.raises(DataFormatError, match=gbk_message(path, 3, 28) + " of the decompressed data") as error:
        read_pairs(path, label_max=1)
    assert f"xz -dc {path} | iconv -f GBK -t UTF-8" in str(error.value)


def test_a_gbk_json_lines_file_names_file_line_and_byte(tmp_path):
    path = tmp_path / "labels.json"
    data = ('{"label": "100", "label_desc": "news_story"}\n'.encode()
            + '{"label": "101", "label_desc": "文化"}\n'.encode("gbk"))
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}:2: not UTF-8: byte 0x{data[-7]:02x} at byte "
                                              f"{len(data) - 7}"):       # 文化"}\n: 4 + 3 bytes
        read_label_file(path)


# Whole-file JSON readers; a BOM, CRLF line ends, and GBK text on line 3.
WHOLE_FILE = b"\xef\xbb\xbf[\r\n  [\"\xe5\xa5\xbd\", \"\xe5\xa5\xbd\"],\r\n  [\"" + "你好".encode("gbk") + b"\"]\r\n]"
WHOLE_FILE_READERS = {
    "lccc": lambda path: read_dialogues(path),
    "c3": lambda path: read_c3(path, labelled=True),
    "cmrc2018": lambda path: read_cmrc2018(path, labelled=True),
    "chid answers": load_json,
}


@pytest.mark.parametrize("reader", WHOLE_FILE_READERS, ids=str)
def test_whole_file_json_readers_name_file_line_and_byte_of_a_gbk_text(tmp_path, reader):
    path = tmp_path / "data.json"
    path.write_bytes(WHOLE_FILE)
    with pytest.raises(DataFormatError, match=gbk_message(path, 3, WHOLE_FILE.index("你".encode("gbk")))):
        WHOLE_FILE_READERS[reader](path)


def test_invalid_json_in_a_whole_file_names_line_column_and_byte(tmp_path):
    path = tmp_path / "data.json"
    data = '\ufeff[\r\n  ["好", "好"],\r\n  ["好" "好"]\r\n]'.encode()
    path.write_bytes(data)
    byte = data.rindex('"好"]'.encode())                  # the second text of line 3 lacks its comma
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}:3: invalid JSON at column 8 "
                                              rf"\(byte {byte}\): Expecting ','"):
        read_dialogues(path)


def test_a_bom_and_crlf_line_ends_still_read_as_before(tmp_path):
    path = tmp_path / "X.valid.data"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD * 2).encode())
    pairs = read_pairs(path, label_max=1)
    assert pairs.first == ["好", "好"] and pairs.second == ["很好", "很好"] and pairs.labels == [1.0, 1.0]
    dialogues = tmp_path / "d.json"
    dialogues.write_bytes(b"\xef\xbb\xbf" + '[\r\n["你 好", "好"]\r\n]'.encode())
    assert read_dialogues(dialogues) == [["你好", "好"]]


def lines(n: int) -> bytes:
    return "".join(f"句子{i}\t句子{i + 1}\t1\n" for i in range(n)).encode()


@pytest.mark.parametrize("suffix, tool, compress", [(".xz", "xz", lzma.compress), (".gz", "gzip", gzip.compress)])
def test_a_truncated_compressed_file_names_the_file_and_the_last_good_line(tmp_path, suffix, tool, compress):
    data = compress(lines(20000))
    path = tmp_path / f"X.train.data{suffix}"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: truncated {tool} data: "
                                              r"decompression stops after line (\d+), the last good line") as error:
        read_pairs(path, label_max=1)
    last = int(re.search(r"after line (\d+)", str(error.value)).group(1))
    assert 1000 < last < 20000
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: truncated"):
        read_dialogues(path)                                   # the whole-file reader says the same


@pytest.mark.parametrize("suffix, tool, data", [
    (".xz", "xz", lzma.compress(lines(50))[:30] + b"\x00" * 40 + lzma.compress(lines(50))[70:]),
    (".gz", "gzip", b"this is not gzip data\n"),
])
def test_corrupt_compressed_data_names_the_file(tmp_path, suffix, tool, data):
    path = tmp_path / f"X.train.data{suffix}"
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: corrupt {tool} data: "
                                              "decompression stops before its first line"):
        read_pairs(path, label_max=1)


def test_an_empty_train_file_fails_on_setup_naming_file_split_and_dataset(tmp_path, tokenizer):
    (tmp_path / "X.train.data").write_text("\n\n", encoding="utf-8")    # blank lines only
    (tmp_path / "X.valid.data").write_text(GOOD, encoding="utf-8")
    dm = STSDataModule("x", str(tmp_path), {"train": "X.train.data", "valid": "X.valid.data"}, label_max=1,
                       source="-", cache_dir=None)
    dm.set_tokenizer(tokenizer)
    with pytest.raises(EmptySplitError, match=f"^{re.escape(str(tmp_path / 'X.train.data'))}: the train split "
                                              "of data=x holds no examples"):
        dm.setup("fit")


def test_an_empty_lccc_split_fails_on_setup(tmp_path, tokenizer):
    (tmp_path / "d.json").write_text(json.dumps({"train": [["一", "二"]], "valid": []}), encoding="utf-8")
    dm = LCCCDataModule("toy", str(tmp_path), {"train": "d.json#train", "valid": "d.json#valid"}, source="-")
    dm.set_tokenizer(tokenizer)
    with pytest.raises(EmptySplitError, match="d.json: the valid split of data=toy holds no examples"):
        dm.setup("fit")


def test_an_empty_corpus_split_fails_on_setup_naming_the_sources(tmp_path, tokenizer):
    (tmp_path / "a.tsv").write_text("一句话\n另一句话\n", encoding="utf-8")
    dm = CorpusDataModule(name="c", root=str(tmp_path), sources=[{"file": "a.tsv", "format": "tsv", "fields": [0]}],
                          valid_fraction=0.0, test_fraction=0.0)
    dm.set_tokenizer(tokenizer)
    with pytest.raises(EmptySplitError, match=f"^{re.escape(str(tmp_path / 'a.tsv'))}: the valid split of data=c "
                                              r"holds no sentences \(its share of the corpus: 0\)"):
        dm.setup("fit")


def test_an_empty_valid_file_stops_the_run_before_training(tmp_path):
    empty = tmp_path / "empty.data"
    empty.write_text("", encoding="utf-8")
    proc = run_cli(tmp_path, f"data.files.valid={empty}", "logger=csv", check=False)
    message = f"EmptySplitError: {empty}: the valid split of data=stsb_sample holds no examples"
    assert proc.returncode != 0 and message in proc.stderr
    [results] = results_of(tmp_path)
    assert results["status"] == "failed" and message in results["error"]
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
