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
    """What to predict, with which model, and where to write the predictions."""

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


def predict_images(args: PredictionArguments, paths: list[Path]) -> list[tuple[str, str, float]]:
    model, image_processor = load_model(args.model)
    rows = []
    for batch in tqdm(list(_batches(paths, args.batch_size)), desc="Predicting", unit="batch"):
        pixel_values = image_processor([_open_image(path) for path in batch], return_tensors="pt")["pixel_values"]
        classes, scores = classify(model, pixel_values)
        for path, class_id, score in zip(batch, classes, scores, strict=True):
            rows.append((str(path), model.config.id2label[int(class_id)], round(float(score), 6)))
    return rows


def predict_csv(args: PredictionArguments, csv_path: Path) -> list[tuple[int, str]]:
    model, image_processor = load_model(args.model)
    pixels, labels = read_digit_csv(csv_path)  # (N, 28, 28) uint8, labels or None
    rows = []
    predicted = []
    for start in tqdm(range(0, len(pixels), args.batch_size), desc="Predicting", unit="batch"):
        chunk = pixels[start : start + args.batch_size]
        classes, _ = classify(model, image_processor.preprocess_uint8(chunk, return_tensors="pt"))
        predicted.append(classes)
    predicted = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
    for index, class_id in enumerate(predicted, start=1):
        rows.append((index, model.config.id2label[int(class_id)]))
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
        header = ("file", "label", "score")
        rows = predict_images(args, find_images(args.inputs))

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


__all__ = ["PredictionArguments", "classify", "find_images", "load_model", "run_prediction"]
