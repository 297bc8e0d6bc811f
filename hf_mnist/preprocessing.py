"""Turning decoded digit datasets into the tensors the model reads.

Images are decoded and normalised once, by the image processor, in batched `datasets.map` work that
datasets caches on disk. Plain grey PNGs, the form in which datasets stores MNIST, are decoded with zlib
rather than Pillow. The result is then held as two in-memory tensors, and a training step fetches
its whole batch with one indexing operation: no PIL, no per-example Python and no per-row Arrow decoding.

When the processor resizes for a backbone, the split stores the 28 x 28 uint8 frames of the MNIST-style step
instead, and each batch is resized as it is fetched. At 224 x 224 in 3 channels, 60,000 digits would take
36 GB as float32 pixel values, and they take 47 MB as frames.
"""

import zlib

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import ConcatenationTable, MemoryMappedTable
from PIL import Image

from .image_processing_mnist import MNIST_FRAME_SIZE, MnistImageProcessor

PIXEL_COLUMN = "pixel_values"
FRAME_COLUMN = "frames"


def stores_frames(image_processor: MnistImageProcessor) -> bool:
    """Tell whether prepared splits hold 28 x 28 frames rather than pixel values: with the MNIST-style step
    on, when the processor's output size differs from the frames' (a backbone's input size)."""
    size = (image_processor.size["height"], image_processor.size["width"])
    return bool(image_processor.do_mnist_normalize) and size != (MNIST_FRAME_SIZE, MNIST_FRAME_SIZE)


def pixel_features(image_processor: MnistImageProcessor, labelled: bool) -> datasets.Features:
    """Features of a prepared split: `pixel_values` as the processor outputs them, or the 28 x 28 uint8
    frames (see `stores_frames`), and the label."""
    if stores_frames(image_processor):
        features = {FRAME_COLUMN: datasets.Array2D(shape=(MNIST_FRAME_SIZE, MNIST_FRAME_SIZE), dtype="uint8")}
    else:
        shape = (image_processor.num_channels, image_processor.size["height"], image_processor.size["width"])
        features = {PIXEL_COLUMN: datasets.Array3D(shape=shape, dtype="float32")}
    if labelled:
        features["label"] = datasets.ClassLabel(names=[str(digit) for digit in range(10)])
    return datasets.Features(features)


def prepare_split(
    split: datasets.Dataset,
    image_processor: MnistImageProcessor,
    *,
    max_samples: int | None = None,
    num_proc: int | None = None,
    desc: str = "Preprocessing digits",
) -> datasets.Dataset:
    """Replace the `image` column with the processor's `pixel_values`, or its frames (see `stores_frames`)."""
    if max_samples is not None:
        split = split.select(range(min(max_samples, len(split))))
    labelled = "label" in split.column_names

    # Image files are decoded here rather than by datasets, so that plain grey PNGs skip Pillow.
    image_feature = split.features.get("image")
    decode_here = isinstance(image_feature, datasets.Image) and image_feature.decode and image_feature.mode is None
    if decode_here:
        split = split.cast_column("image", datasets.Image(decode=False))

    frames = stores_frames(image_processor)

    def encode(batch):
        images = [_decode_image_cell(cell) for cell in batch["image"]] if decode_here else batch["image"]
        if all(isinstance(image, np.ndarray) for image in images) and len({image.shape for image in images}) == 1:
            # Decoded grey PNGs: one stacked array gives the values that a list of mode "L" images would.
            images = np.stack(images)

        if frames:
            encoded = {FRAME_COLUMN: image_processor.to_mnist_frames(images)[0]}
        elif isinstance(images, np.ndarray):
            encoded = {PIXEL_COLUMN: image_processor.preprocess_uint8(images)}
        else:
            encoded = {PIXEL_COLUMN: image_processor(images, return_tensors="np")[PIXEL_COLUMN]}
        if labelled:
            encoded["label"] = batch["label"]
        return encoded

    prepared = split.map(
        encode,
        batched=True,
        batch_size=1000,
        remove_columns=split.column_names,
        features=pixel_features(image_processor, labelled),
        num_proc=num_proc,
        desc=desc,
    )
    return prepared


def _decode_image_cell(cell: dict) -> np.ndarray | Image.Image:
    """Decode a `{"bytes", "path"}` cell of an image column: an (H, W) uint8 array, or a Pillow image."""
    if cell.get("bytes") is not None:
        pixels = _plain_grey_png_pixels(cell["bytes"])
        if pixels is not None:
            return pixels
    return datasets.Image().decode_example(cell)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _plain_grey_png_pixels(data: bytes) -> np.ndarray | None:
    """
    Decode a plain grey PNG into an (H, W) uint8 array, or return None for any other file.

    Plain means 8-bit greyscale, not interlaced, with only IHDR, IDAT and IEND chunks and every row stored
    unfiltered: what Pillow writes for MNIST digits, which is how datasets stores them. zlib and a reshape
    decode such a file in a fraction of the time Pillow takes, to the same values. Every other file, and any
    file with a bad checksum, returns None and goes to Pillow, which decodes it or raises its own error.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    header, compressed, position = None, [], len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind_and_body = data[position + 4 : position + 8 + length]
        checksum = data[position + 8 + length : position + 12 + length]
        if len(checksum) != 4 or zlib.crc32(kind_and_body) != int.from_bytes(checksum, "big"):
            return None
        kind, body = kind_and_body[:4], kind_and_body[4:]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
        else:
            return None
        position += 12 + length
    # IHDR: width, height (4 bytes each), then bit depth, colour type, compression, filter method, interlace.
    if header is None or len(header) != 13 or tuple(header[8:]) != (8, 0, 0, 0, 0):
        return None
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    try:
        raw = zlib.decompress(b"".join(compressed))
    except zlib.error:
        return None
    if len(raw) != height * (width + 1):
        return None
    if raw[:: width + 1] != bytes(height):  # each row starts with its filter type, 0 for unfiltered
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)[:, 1:]


class DigitTensors(torch.utils.data.Dataset):
    """A prepared split held as tensors: `pixel_values` (N, C, H, W) float32 and, if labelled, `labels` (N,).

    A split that stores frames (see `stores_frames`) is held as `frames` (N, 28, 28) uint8 instead, with
    `pixel_values` None, and `image_processor`, the processor that prepared it, turns each fetched batch into
    pixel values. `DataLoader` calls `__getitems__` with the indices of a whole batch, which returns the batch
    already stacked; `collate_digit_batch` passes it through.
    """

    def __init__(self, split: datasets.Dataset, image_processor: MnistImageProcessor | None = None):
        labelled = "label" in split.column_names
        column = FRAME_COLUMN if FRAME_COLUMN in split.column_names else PIXEL_COLUMN
        if column == FRAME_COLUMN and image_processor is None:
            raise ValueError(
                "This split contains 28 x 28 frames, which need the image processor that prepared it to become "
                "pixel values: pass it as DigitTensors(split, image_processor)."
            )
        columns = _stream_cache_files(split, column, labelled)
        if columns is None:
            columns = split.with_format("numpy")[:]  # every row at once: {column: np.ndarray}
        values = torch.from_numpy(np.ascontiguousarray(columns[column]))
        self.pixel_values = values if column == PIXEL_COLUMN else None
        self.frames = values if column == FRAME_COLUMN else None
        self.image_processor = image_processor
        self.labels = torch.from_numpy(columns["label"].astype(np.int64)) if labelled else None

    def __len__(self) -> int:
        return len(self.pixel_values if self.frames is None else self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.frames is None:
            batch = {PIXEL_COLUMN: self.pixel_values[index]}
        else:
            batch = {PIXEL_COLUMN: self.image_processor.pixel_values_from_frames(self.frames[index])}
        if self.labels is not None:
            batch["labels"] = self.labels[index]
        return batch


def _stream_cache_files(split: datasets.Dataset, column: str, labelled: bool) -> dict[str, np.ndarray] | None:
    """
    Read `column` and the labels of a prepared split straight from its datasets cache files, one record batch
    at a time.

    Reading through datasets' memory map would leave every page of the file resident next to the tensor copy,
    which doubles the memory the digits take. Streaming the file with plain reads into one preallocated array
    keeps a single copy. Returns None when the split is not exactly its cache files in order, and the caller
    then reads through datasets. Such splits are held in memory, reordered by an indices mapping, sliced, or
    changed by a transform that datasets replays on load.
    """
    tables = split.data.blocks if isinstance(split.data, ConcatenationTable) else [[split.data]]
    if split._indices is not None or any(len(row) != 1 for row in tables):
        return None
    tables = [row[0] for row in tables]
    if not all(isinstance(table, MemoryMappedTable) and _replays_keep_values(table) for table in tables):
        return None

    feature = split.features[column]
    shape = feature.shape
    values = np.empty((len(split), *shape), dtype=feature.dtype)
    labels = np.empty(len(split), dtype=np.int64) if labelled else None
    row = 0
    for table in tables:
        with pa.OSFile(table.path) as source:
            for batch in pa.ipc.open_stream(source):
                end = row + batch.num_rows
                if end > len(split):
                    return None
                values[row:end] = _flat_values(batch.column(column)).reshape(batch.num_rows, *shape)
                if labelled:
                    labels[row:end] = batch.column("label").to_numpy()
                row = end
    if row != len(split):
        return None
    return {column: values, "label": labels}


def _replays_keep_values(table: MemoryMappedTable) -> bool:
    """Tell whether the transforms that datasets replays on `table` leave its values as in the file."""
    # datasets itself records the features in the schema metadata of the files that map writes.
    return all(replay[0] == "replace_schema_metadata" for replay in table.replays)


def _flat_values(column: pa.Array) -> np.ndarray:
    """Return the values of a (nested) list column, such as datasets' Array2D or Array3D storage, as one flat
    array."""
    values = column.storage if isinstance(column, pa.ExtensionArray) else column
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False)


def collate_digit_batch(batch) -> dict[str, torch.Tensor]:
    """Collate function for `DigitTensors`: pass a stacked batch through, stack a list of examples."""
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([example[key] for example in batch]) for key in batch[0]}


def prepare_splits(
    raw: datasets.DatasetDict,
    image_processor: MnistImageProcessor,
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Prepare every split of `raw`; `max_train_samples` caps train, `max_eval_samples` each other split."""
    prepared = {}
    for name, split in raw.items():
        limit = max_train_samples if name == "train" else max_eval_samples
        prepared[name] = prepare_split(
            split, image_processor, max_samples=limit, num_proc=num_proc, desc=f"Preprocessing {name} digits"
        )
    return datasets.DatasetDict(prepared)


__all__ = [
    "FRAME_COLUMN",
    "PIXEL_COLUMN",
    "DigitTensors",
    "collate_digit_batch",
    "pixel_features",
    "prepare_split",
    "prepare_splits",
    "stores_frames",
]
