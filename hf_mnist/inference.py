"""Batch prediction with a saved digit classifier over image files, folders or a Kaggle-layout CSV."""

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .data import read_digit_csv
from .image_processing_mnist import MnistImageProcessor
from .modeling_mnist import MnistForImageClassification

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class PredictionArguments:
    """Arguments of scripts/predict.py: the model, the inputs and the output CSV."""

    model: str = field(metadata={"help": "Saved model folder (a training output_dir) or Hub model id."})
    inputs: list[str] = field(
        metadata={
            "help": "Image files, folders of images (searched recursively), or one CSV in the Kaggle "
            "digit-recognizer layout (pixel0..pixel783, with or without a label column)."
        }
    )
    output_csv: str = field(
        default="predictions.csv",
        metadata={
            "help": "Where to write predictions: file,label,score for images; ImageId,Label (a Kaggle "
            "submission) for a CSV."
        },
    )
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})
    explain_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder in which to save, as a grey PNG, the image the model saw for each input: the "
            "pixel values turned back into 0-255 grey levels (28 x 28 unless the model reads another size). "
            "Image inputs then get a model_input column with the PNG's path; a Kaggle CSV keeps its two "
            "columns, and the PNGs are named after the ImageId. Default: save none."
        },
    )


def load_model(model_name_or_path: str) -> tuple[MnistForImageClassification, MnistImageProcessor]:
    model = MnistForImageClassification.from_pretrained(model_name_or_path).eval()
    return model, MnistImageProcessor.from_pretrained(model_name_or_path)


@torch.inference_mode()
def classify(model: MnistForImageClassification, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Return the predicted class ids and their softmax probabilities for one batch."""
    probabilities = model(pixel_values=pixel_values).logits.softmax(dim=-1)
    scores, classes = probabilities.max(dim=-1)
    return classes.numpy(), scores.numpy()


def find_images(inputs: list[str]) -> list[Path]:
    """Expand `inputs` into image files: files as given, folders searched recursively in sorted order."""
    images = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"Folder {path} contains no image files ({', '.join(IMAGE_SUFFIXES)}).")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"Input {path} does not exist; give image files, folders or a CSV.")
    return images


def _make_explain_dir(explain_dir: str | None) -> Path | None:
    if explain_dir is None:
        return None
    folder = Path(explain_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--explain_dir {folder} is a file; give a folder for the model-input PNGs.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"Cannot read image file {path}: {err}. Remove it or convert it to PNG.") from err


def save_model_inputs(
    image_processor: MnistImageProcessor, pixel_values: torch.Tensor, paths: list[Path]
) -> list[Path]:
    """Save each image of `pixel_values` as the grey PNG at the matching path, and return the paths."""
    images = image_processor.unnormalize(pixel_values)  # (B, H, W) uint8
    for image, path in zip(images, paths, strict=True):
        Image.fromarray(image).save(path)  # (H, W) uint8 gives mode "L"
    return paths


def predict_images(args: PredictionArguments, paths: list[Path]) -> tuple[tuple[str, ...], list[tuple]]:
    """
    Predict every image file: returns the CSV header and one row per file.

    The columns are file, label and score, then digit_found when the processor reports it (with its
    MNIST-style step on), then model_input with `explain_dir`. An image without a digit gets an empty label
    and score rather than the model's guess on an empty frame.
    """
    model, image_processor = load_model(args.model)
    explain_dir = _make_explain_dir(args.explain_dir)
    records = []
    for batch_index, batch in enumerate(tqdm(list(_batches(paths, args.batch_size)), desc="Predicting", unit="batch")):
        inputs = image_processor([_open_image(path) for path in batch], return_tensors="pt")
        classes, scores = classify(model, inputs["pixel_values"])
        digit_found = inputs.get("digit_found")
        model_inputs = None
        if explain_dir is not None:
            first = batch_index * args.batch_size
            names = [explain_dir / f"{first + offset:06d}_{path.stem}.png" for offset, path in enumerate(batch)]
            model_inputs = save_model_inputs(image_processor, inputs["pixel_values"], names)

        for index, path in enumerate(batch):
            record = {
                "file": str(path),
                "label": model.config.id2label[int(classes[index])],
                "score": round(float(scores[index]), 6),
            }
            if digit_found is not None:
                record["digit_found"] = bool(digit_found[index])
                if not record["digit_found"]:
                    record["label"] = record["score"] = ""
            if model_inputs is not None:
                record["model_input"] = str(model_inputs[index])
            records.append(record)

    without_digit = sum(record.get("digit_found") is False for record in records)
    if without_digit:
        logger.warning(
            "No digit found in %d of %d images; their label and score are left empty.", without_digit, len(records)
        )
    header = tuple(records[0]) if records else ("file", "label", "score")
    return header, [tuple(record.values()) for record in records]


def predict_csv(args: PredictionArguments, csv_path: Path) -> list[tuple[int, str]]:
    model, image_processor = load_model(args.model)
    pixels, labels = read_digit_csv(csv_path)  # (N, 28, 28) uint8, labels or None
    explain_dir = _make_explain_dir(args.explain_dir)
    rows = []
    predicted = []
    without_digit = []
    for start in tqdm(range(0, len(pixels), args.batch_size), desc="Predicting", unit="batch"):
        chunk = pixels[start : start + args.batch_size]
        pixel_values, digit_found = image_processor.preprocess_uint8(
            chunk, return_tensors="pt", return_digit_found=True
        )
        classes, _ = classify(model, pixel_values)
        predicted.append(classes)

        image_ids = range(start + 1, start + len(chunk) + 1)  # Kaggle counts ImageId from 1
        if digit_found is not None:
            without_digit.extend(
                image_id for image_id, found in zip(image_ids, digit_found.tolist(), strict=True) if not found
            )
        if explain_dir is not None:
            save_model_inputs(
                image_processor, pixel_values, [explain_dir / f"{image_id}.png" for image_id in image_ids]
            )

    predicted = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
    label_names = [model.config.id2label[class_id] for class_id in range(model.config.num_labels)]
    rows.extend(enumerate((label_names[class_id] for class_id in predicted.tolist()), start=1))

    if without_digit:
        # A submission needs a label on every row, so these keep the model's guess.
        logger.warning(
            "No digit found in %d of %d images (ImageId %s); their labels are guesses on an empty frame.",
            len(without_digit),
            len(rows),
            ", ".join(str(image_id) for image_id in without_digit[:10]) + (", ..." if len(without_digit) > 10 else ""),
        )
    if labels is not None:
        logger.info("Accuracy against the CSV's labels: %.4f", float((predicted == labels).mean()))
    return rows


def run_prediction(args: PredictionArguments) -> Path:
    """Predict every input and write the CSV; return its path."""
    csv_inputs = [entry for entry in args.inputs if entry.lower().endswith(".csv")]
    if csv_inputs and len(args.inputs) > 1:
        raise ValueError(
            f"--inputs mixes a CSV ({csv_inputs[0]}) with other inputs; predict a CSV on its own, since it "
            "gets the Kaggle submission layout."
        )
    if csv_inputs:
        header = ("ImageId", "Label")
        rows = predict_csv(args, Path(csv_inputs[0]))
    else:
        header, rows = predict_images(args, find_images(args.inputs))

    # Written through a temporary file, so an interrupted run leaves no truncated predictions.
    output = Path(args.output_csv)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(temporary, output)
    logger.info("Wrote %d predictions to %s", len(rows), output)
    return output


__all__ = ["PredictionArguments", "classify", "find_images", "load_model", "run_prediction", "save_model_inputs"]
