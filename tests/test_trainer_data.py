"""Data loading: the formats, and every malformed case stops with file, row and column named."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.schemas.datasets import (
    FLOAT32_MAX,
    DataError,
    Dataset,
    ecg5000_files,
    load_dataset,
    parse_text,
    split_train_test,
)

L = 140


def _csv_row(label: int, value: float = 0.5) -> str:
    """The tutorial's ecg.csv: 140 values, then the label (1 = normal)."""
    return ",".join([f"{value + i / 1000:.4f}" for i in range(L)] + [str(label)])


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ecg_csv_is_parsed(tmp_path: Path) -> None:
    path = _write(tmp_path, "ecg.csv", [_csv_row(1), _csv_row(0, 2.0), _csv_row(1)])
    data = load_dataset(str(path))
    assert data.beats.shape == (3, L) and data.beats.dtype == np.float32
    assert data.is_normal.tolist() == [True, False, True]
    assert data.classes is None
    assert data.beats[1, 0] == pytest.approx(2.0)


def test_ucr_tsv_keeps_classes() -> None:
    text = "\n".join("\t".join([str(c), *["0.25"] * L]) for c in (1, 2, 5, 1))
    data = parse_text(text, "x.tsv")
    assert data.classes.tolist() == [1, 2, 5, 1]
    assert data.is_normal.tolist() == [True, False, False, True]


def test_unlabelled_rows_for_scoring() -> None:
    data = parse_text("\n".join([",".join(["1"] * L)] * 2), "beats.csv", labelled=False)
    assert data.beats.shape == (2, L) and data.is_normal is None


def test_default_data_is_ecg5000_with_the_tutorial_split() -> None:
    data = load_dataset()
    assert data.beats.shape == (5000, L)
    assert int(data.is_normal.sum()) == 2919
    assert sorted(set(data.classes.tolist())) == [1, 2, 3, 4, 5]
    train, test = split_train_test(data, 0.2, 21)
    assert (len(train), len(test)) == (4000, 1000)


@pytest.mark.parametrize(("n", "test_size", "seed"), [(5000, 0.2, 21), (4998, 0.2, 21), (37, 0.33, 5)])
def test_split_is_scikit_learns_train_test_split(n: int, test_size: float, seed: int) -> None:
    from sklearn.model_selection import train_test_split

    rows = Dataset(np.arange(n, dtype=np.float32)[:, None], None, None, "rows")
    train, test = split_train_test(rows, test_size, seed)
    expected_train, expected_test = train_test_split(np.arange(n), test_size=test_size, random_state=seed)
    assert train.beats[:, 0].tolist() == expected_train.tolist()
    assert test.beats[:, 0].tolist() == expected_test.tolist()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # wrong column count: one value short, one too many
        ([_csv_row(1), _csv_row(1).rsplit(",", 2)[0] + ",1"], r"row 2, column 141: missing"),
        ([_csv_row(1) + ",7"], r"row 1, column 142: unexpected"),
        # non-numeric cell
        (
            [_csv_row(1), _csv_row(1), _csv_row(1).replace("0.5040", "abc")],
            r"row 3, column 5: 'abc' is not a number",
        ),
        # NaN and infinity
        ([_csv_row(1).replace("0.5090", "nan")], r"row 1, column 10: 'nan' is not finite"),
        ([_csv_row(0), _csv_row(1).replace("0.5000", "-inf")], r"row 2, column 1: '-inf' is not finite"),
        # label outside 0/1
        ([_csv_row(1), _csv_row(3)], r"row 2, column 141: label 3 is not 0 or 1"),
        # beyond float32 (where every consumer scores): the worker's bound, at load time
        (
            [_csv_row(1), _csv_row(1).replace("0.5070", "1e39")],
            r"row 2, column 8: '1e39' is outside the float32",
        ),
        ([_csv_row(1).replace("0.5000", "-3.5e38")], r"row 1, column 1: '-3.5e38' is outside the float32"),
        # empty file, and one of blank lines only
        ([], r"file is empty"),
        (["", "   "], r"file is empty"),
    ],
    ids=[
        "short-row",
        "long-row",
        "non-numeric",
        "nan",
        "inf",
        "bad-label",
        "1e39",
        "-3.5e38",
        "empty",
        "blank",
    ],
)
def test_malformed_data_names_file_row_and_column(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path, "bad.csv", lines)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(str(path))
    assert str(path) in str(caught.value)


def test_float32_bound_is_the_beat_schemas_and_its_maximum_loads() -> None:
    from ecg_anomaly.schemas.messages import beat_schema

    values = beat_schema()["properties"]["values"]["items"]
    assert FLOAT32_MAX == values["maximum"] == -values["minimum"]
    data = parse_text(",".join([repr(FLOAT32_MAX)] + ["0"] * (L - 1) + ["1"]), "edge.csv")
    assert data.beats[0, 0] == np.float32(FLOAT32_MAX)


def test_one_class_files_load_for_evaluation(tmp_path: Path) -> None:
    """Only abnormal (or only normal) rows: fine to evaluate on; training checks its own needs."""
    data = load_dataset(str(_write(tmp_path, "abnormal.csv", [_csv_row(0), _csv_row(0)])))
    assert data.is_normal.tolist() == [False, False]


def test_rows_remember_their_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "beats.csv", ["", _csv_row(1), "", _csv_row(0)])
    data = load_dataset(str(path))
    assert data.locate(1) == f"{path}: row 4"
    assert data.take(np.array([1])).locate(0, 9) == f"{path}: row 4, column 10"
    tsv = parse_text("\n".join("\t".join([str(c), *["0.25"] * L]) for c in (1, 2)), "x.tsv")
    assert tsv.locate(1, 0) == "x.tsv: row 2, column 2"  # the class comes first
    train_file, test_file = ecg5000_files()
    ecg = load_dataset()
    assert (
        ecg.locate(0) == f"{train_file}: row 1" and ecg.locate(500, 139) == f"{test_file}: row 1, column 141"
    )


def test_ucr_label_must_be_a_class_number(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.tsv", ["\t".join(["1", *["0.1"] * L]), "\t".join(["2.5", *["0.1"] * L])])
    with pytest.raises(DataError, match=r"bad.tsv: row 2, column 1: label 2.5 is not a class number"):
        load_dataset(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv: cannot read"):
        load_dataset(str(tmp_path / "nope.csv"))


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path`` (404 for anything missing)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_read(http_dir: str, tmp_path: Path) -> None:
    _write(tmp_path, "ecg.csv", [_csv_row(1), _csv_row(0)])
    data = load_dataset(f"{http_dir}/ecg.csv")
    assert data.is_normal.tolist() == [True, False]


def test_unreadable_url_is_named(http_dir: str) -> None:
    url = f"{http_dir}/missing.csv"
    with pytest.raises(DataError, match=r"missing.csv: cannot download \(HTTP 404"):
        load_dataset(url)


def test_cli_prints_one_line_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.csv", [_csv_row(1), _csv_row(1).replace("0.5100", "x")])
    assert main(["train", "--data", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err == f"ecg-anomaly train: error: {path}: row 2, column 11: 'x' is not a number"
