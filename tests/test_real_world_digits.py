"""Digits from the real world: photos and drawings made from held-out sample digits, read by a trained model.

Every input is built from a digit of the sample's test split, which the model never trains on, with a seeded
generator, so each run reads the same files. The digit's 28-pixel MNIST frame is scaled to 36-60 pixels (the
digit itself to about 26-43) and put at a random place on a square canvas of 100-200 pixels:

* photo: dark ink on paper, lit unevenly (the light falls by 30-50% across the page in a random direction),
  with sensor noise and a slight colour cast, saved as a JPEG of quality 75;
* drawing: dark blue strokes on a transparent canvas, saved as an RGBA PNG.

With MNIST-style normalization on, the accuracy on both stays within `ACCURACY_MARGIN` of the accuracy on
the original digits; with it off, it falls below `COLLAPSED_ACCURACY`. The accuracies are logged at INFO:
run with `-o log_cli=true --log-cli-level=INFO` to see them.
"""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from hf_mnist.cli import parse_arguments
from hf_mnist.data import load_digits
from hf_mnist.image_processing_mnist import MnistImageProcessor
from hf_mnist.inference import PredictionArguments, run_prediction
from hf_mnist.modeling_mnist import MnistForImageClassification
from hf_mnist.train import DataArguments, MnistTrainingArguments, ModelArguments, run_training

logger = logging.getLogger(__name__)

TRAIN_EPOCHS = 6
SEED = 2024

# Largest accepted drop in accuracy from the original digits to their real-world versions, with the
# MNIST-style step on. Without the step, the real-world versions must score below COLLAPSED_ACCURACY.
ACCURACY_MARGIN = 0.05
COLLAPSED_ACCURACY = 0.40


# ---------------------------------------------------------------------------------------------------------
# Input generators
# ---------------------------------------------------------------------------------------------------------


def _placed_coverage(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a square canvas of 100-200 pixels with the digit's ink coverage (0-1) at a random place."""
    canvas_side = int(rng.integers(100, 201))
    digit_side = int(rng.integers(36, 61))  # the whole 28-pixel MNIST frame, so the digit spans 5/7 of it
    scaled = Image.fromarray(digit).resize((digit_side, digit_side), Image.Resampling.BICUBIC)
    top, left = (int(rng.integers(0, canvas_side - digit_side + 1)) for _ in range(2))
    coverage = np.zeros((canvas_side, canvas_side), dtype=np.float32)
    coverage[top : top + digit_side, left : left + digit_side] = np.asarray(scaled, dtype=np.float32) / 255
    return coverage


def make_photo(digit: np.ndarray, rng: np.random.Generator, path: Path) -> Path:
    """Save the digit as a phone-photo-like JPEG at `path`: dark ink on unevenly lit, noisy paper."""
    coverage = _placed_coverage(digit, rng)
    side = coverage.shape[0]
    paper, ink = rng.uniform(190, 240), rng.uniform(20, 80)

    # Light falls off linearly along a random direction, by 30-50% from one edge of the page to the other.
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.indices((side, side)) / side
    ramp = np.cos(angle) * cols + np.sin(angle) * rows
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    lighting = 1 - rng.uniform(0.3, 0.5) * ramp

    grey = (paper * (1 - coverage) + ink * coverage) * lighting + rng.normal(0, 6, (side, side))
    rgb = np.clip(grey[..., None] * np.array([1.0, 0.97, 0.9]), 0, 255).astype(np.uint8)  # warm light
    Image.fromarray(rgb).save(path, format="JPEG", quality=75)
    return path


def make_drawing(digit: np.ndarray, rng: np.random.Generator, path: Path) -> Path:
    """Save the digit as a canvas-drawing-like RGBA PNG at `path`: dark blue strokes on transparency."""
    coverage = _placed_coverage(digit, rng)
    rgba = np.zeros((*coverage.shape, 4), dtype=np.uint8)
    rgba[..., :3] = (20, 30, 90)
    rgba[..., 3] = np.round(coverage * 255).astype(np.uint8)
    Image.fromarray(rgba).save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The sample's 500 held-out test digits, (500, 28, 28) uint8, and their labels."""
    split = load_digits("sample")["test"]
    return np.stack([np.asarray(image) for image in split["image"]]), np.asarray(split["label"])


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """A model trained on the sample's train split with the default image processor, saved to a folder."""
    output_dir = tmp_path_factory.mktemp("real-world") / "model"
    training_args = MnistTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=TRAIN_EPOCHS,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to=[],
        disable_tqdm=True,
    )
    run_training(ModelArguments(), DataArguments(), training_args)
    return output_dir


@pytest.fixture(scope="module")
def model(trained_model) -> MnistForImageClassification:
    return MnistForImageClassification.from_pretrained(trained_model).eval()


@pytest.fixture(scope="module")
def real_world_files(tmp_path_factory, test_split) -> dict[str, list[Path]]:
    """The photo and drawing files of every test digit, in test-split order."""
    digits, _ = test_split
    folder = tmp_path_factory.mktemp("real-world-inputs")
    files = {}
    for kind, make in (("photo", make_photo), ("drawing", make_drawing)):
        rng = np.random.default_rng([SEED, len(files)])
        suffix = ".jpg" if kind == "photo" else ".png"
        files[kind] = [make(digit, rng, folder / f"{kind}_{index:03d}{suffix}") for index, digit in enumerate(digits)]
    return files


def predict(
    model: MnistForImageClassification, processor: MnistImageProcessor, images
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the predicted classes and the processor's `digit_found` flags (None with normalization off)."""
    inputs = processor(images, return_tensors="pt")
    with torch.inference_mode():
        logits = model(pixel_values=inputs["pixel_values"]).logits
    digit_found = inputs.get("digit_found")
    return logits.argmax(-1).numpy(), None if digit_found is None else digit_found.numpy()


@pytest.fixture(scope="module")
def evaluation(model, test_split, real_world_files) -> dict[tuple[str, bool], tuple[float, np.ndarray | None]]:
    """Accuracy and `digit_found` flags for each kind of input ("original", "photo", "drawing") and each
    do_mnist_normalize setting."""
    digits, labels = test_split
    inputs = {"original": list(digits)}
    inputs.update({kind: [str(path) for path in paths] for kind, paths in real_world_files.items()})
    results = {}
    for normalize in (True, False):
        processor = MnistImageProcessor(do_mnist_normalize=normalize)
        for kind, images in inputs.items():
            classes, digit_found = predict(model, processor, images)
            accuracy = float((classes == labels).mean())
            results[kind, normalize] = (accuracy, digit_found)
            logger.info("Accuracy on %d %s digits, do_mnist_normalize=%s: %.3f", len(labels), kind, normalize, accuracy)
    return results


@pytest.fixture(scope="module")
def accuracies(evaluation) -> dict[tuple[str, bool], float]:
    return {key: accuracy for key, (accuracy, _) in evaluation.items()}


# ---------------------------------------------------------------------------------------------------------
# MNIST digits stay as they are
# ---------------------------------------------------------------------------------------------------------


def test_sample_digits_pass_unchanged():
    digits = load_digits("sample")
    pixels = np.stack([np.asarray(image) for split in digits.values() for image in split["image"]])
    processor = MnistImageProcessor()

    output = processor.unnormalize(processor.preprocess_uint8(pixels))

    unchanged = (output == pixels).all(axis=(1, 2))
    # One sample digit is 19 pixels tall and wide at most, so it is scaled up to the 20-pixel box.
    assert unchanged.sum() >= len(pixels) - 1


def test_normalization_keeps_sample_accuracy(accuracies, test_split):
    one_digit = 1 / len(test_split[1])

    assert accuracies["original", True] >= accuracies["original", False] - one_digit


# ---------------------------------------------------------------------------------------------------------
# Photos and drawings
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["photo", "drawing"])
def test_normalized_accuracy_near_original(accuracies, kind):
    assert accuracies[kind, True] >= accuracies["original", True] - ACCURACY_MARGIN


@pytest.mark.parametrize("kind", ["photo", "drawing"])
def test_accuracy_collapses_without_normalization(accuracies, kind):
    assert accuracies[kind, False] < COLLAPSED_ACCURACY


@pytest.mark.parametrize("kind", ["photo", "drawing"])
def test_digit_found_in_every_file(evaluation, kind):
    _, digit_found = evaluation[kind, True]

    assert digit_found.all()


def test_pipeline_matches_forward(trained_model, model, real_world_files):
    # The pipeline converts files and Pillow images to RGB, which drops transparency, so drawings go in as
    # RGBA arrays, which it passes to the processor as they are.
    images = [str(path) for path in real_world_files["photo"][:8]]
    images += [np.asarray(Image.open(path)) for path in real_world_files["drawing"][:8]]
    classifier = pipeline("image-classification", model=str(trained_model), trust_remote_code=True)
    classes, _ = predict(model, MnistImageProcessor.from_pretrained(trained_model), images)
    expected = [str(label) for label in classes]

    results = classifier(images, batch_size=4)  # batching collates the extra digit_found key too

    assert [result[0]["label"] for result in results] == expected


# ---------------------------------------------------------------------------------------------------------
# predict.py: no-digit reporting and --explain_dir
# ---------------------------------------------------------------------------------------------------------


def _blank_paper(path: Path) -> Path:
    rng = np.random.default_rng(SEED)
    paper = np.clip(np.linspace(235, 160, 140)[None, :] + rng.normal(0, 6, (140, 140)), 0, 255).astype(np.uint8)
    Image.fromarray(paper).save(path, format="JPEG", quality=75)
    return path


@pytest.fixture(scope="module")
def predicted_folder(tmp_path_factory, trained_model, real_world_files) -> tuple[list[dict], Path]:
    """Predict 4 photos, 4 drawings, blank paper and a black image with --explain_dir, as predict.py does.

    The flags go through the script's parser. The script's `main`, which also sets up logging for the
    process, runs as a subprocess in tests/test_training.py.
    """
    folder = tmp_path_factory.mktemp("predict-inputs")
    for path in real_world_files["photo"][:4] + real_world_files["drawing"][:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    _blank_paper(folder / "blank_paper.jpg")
    Image.new("L", (28, 28), 0).save(folder / "black.png")
    output_csv = folder.parent / "predictions.csv"
    explain_dir = folder.parent / "seen"
    argv = ["--model", str(trained_model), "--inputs", str(folder), "--output_csv", str(output_csv)]
    (args,) = parse_arguments((PredictionArguments,), [*argv, "--explain_dir", str(explain_dir)])

    run_prediction(args)

    with output_csv.open(newline="") as handle:
        return list(csv.DictReader(handle)), explain_dir


def test_predict_flags_images_without_digit(predicted_folder):
    rows, _ = predicted_folder
    flags = {Path(row["file"]).name: row["digit_found"] for row in rows}

    assert flags["blank_paper.jpg"] == "False"
    assert flags["black.png"] == "False"
    assert sum(flag == "True" for flag in flags.values()) == 8


def test_predict_leaves_label_empty_without_digit(predicted_folder):
    rows, _ = predicted_folder
    blank = [row for row in rows if row["digit_found"] == "False"]

    assert [(row["label"], row["score"]) for row in blank] == [("", ""), ("", "")]


def test_predict_explain_saves_model_input(predicted_folder, trained_model):
    rows, explain_dir = predicted_folder
    processor = MnistImageProcessor.from_pretrained(trained_model)

    for row in rows:
        saved = np.asarray(Image.open(row["model_input"]))
        expected = processor.unnormalize(processor(row["file"], return_tensors="np")["pixel_values"])[0]
        assert Path(row["model_input"]).parent == explain_dir
        np.testing.assert_array_equal(saved, expected)


def test_predict_kaggle_csv_explains_and_warns(trained_model, test_split, tmp_path, caplog):
    digits, _ = test_split
    pixels = np.concatenate([digits[:3], np.zeros((1, 28, 28), dtype=np.uint8)]).reshape(4, -1)
    test_csv = tmp_path / "test.csv"
    with test_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"pixel{k}" for k in range(784)])
        writer.writerows(pixels.tolist())
    args = PredictionArguments(
        model=str(trained_model),
        inputs=[str(test_csv)],
        output_csv=str(tmp_path / "submission.csv"),
        explain_dir=str(tmp_path / "seen"),
    )

    with caplog.at_level(logging.WARNING, logger="hf_mnist.inference"):
        output = run_prediction(args)

    with output.open(newline="") as handle:
        assert next(csv.reader(handle)) == ["ImageId", "Label"]
    assert sorted(path.name for path in (tmp_path / "seen").iterdir()) == ["1.png", "2.png", "3.png", "4.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "seen" / "2.png")), digits[1])
    assert "No digit found in 1 of 4 images (ImageId 4)" in caplog.text
