"""The fast paths (cached tensors, batch fetches, CSV prediction) give what the slow per-image paths give."""

import csv
import io
import logging
import warnings
import zlib

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import hf_mnist.image_processing_mnist as ipm
from hf_mnist import preprocessing
from hf_mnist.configuration_mnist import MnistConfig
from hf_mnist.data import SAMPLE_PATH
from hf_mnist.image_processing_mnist import MnistImageProcessor
from hf_mnist.inference import PredictionArguments, run_prediction
from hf_mnist.modeling_mnist import MnistForImageClassification
from hf_mnist.preprocessing import DigitTensors, collate_digit_batch, prepare_split

DIGIT_COUNT = 64


@pytest.fixture(scope="module")
def sample_digits() -> datasets.Dataset:
    return datasets.Dataset.from_parquet(str(SAMPLE_PATH)).select(range(DIGIT_COUNT))


@pytest.fixture(scope="module")
def digit_tensors(sample_digits) -> DigitTensors:
    return DigitTensors(prepare_split(sample_digits, MnistImageProcessor()))


def test_prepared_tensors_equal_processor_call(sample_digits, digit_tensors):
    processor_output = MnistImageProcessor()(list(sample_digits["image"]), return_tensors="pt")["pixel_values"]

    assert digit_tensors.pixel_values.shape == processor_output.shape
    assert digit_tensors.pixel_values.dtype == torch.float32
    assert torch.equal(digit_tensors.pixel_values, processor_output)


def test_prepared_labels_equal_source(sample_digits, digit_tensors):
    assert digit_tensors.labels.tolist() == sample_digits["label"]


def test_getitems_equals_stacked_getitem(digit_tensors):
    indices = [5, 0, 63, 17, 17, 2]
    batch = digit_tensors.__getitems__(indices)
    stacked = collate_digit_batch([digit_tensors[index] for index in indices])

    assert set(batch) == {"pixel_values", "labels"}
    assert torch.equal(batch["pixel_values"], stacked["pixel_values"])
    assert torch.equal(batch["labels"], stacked["labels"])


def test_collate_passes_stacked_batch_through(digit_tensors):
    batch = digit_tensors.__getitems__([1, 2, 3])

    assert collate_digit_batch(batch) is batch


def test_dataloader_batches_equal_getitems(digit_tensors):
    loader = torch.utils.data.DataLoader(digit_tensors, batch_size=16, collate_fn=collate_digit_batch)
    first = next(iter(loader))
    expected = digit_tensors.__getitems__(list(range(16)))

    assert torch.equal(first["pixel_values"], expected["pixel_values"])
    assert torch.equal(first["labels"], expected["labels"])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A randomly initialised model and the default processor, saved as a training run saves them."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    MnistForImageClassification(MnistConfig()).save_pretrained(folder)
    MnistImageProcessor().save_pretrained(folder)
    return folder


def test_predict_csv_equals_slow_path(tmp_path, sample_digits, saved_model):
    images = list(sample_digits["image"])
    pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # (N, 28, 28)
    csv_path = tmp_path / "digits.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"pixel{index}" for index in range(784)])
        writer.writerows(pixels.reshape(len(pixels), -1).tolist())

    output = run_prediction(
        PredictionArguments(
            model=str(saved_model), inputs=[str(csv_path)], output_csv=str(tmp_path / "out.csv"), batch_size=10
        )
    )
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))

    # Slow path: Pillow images rebuilt from the CSV's pixels, the processor's __call__, then the model.
    model = MnistForImageClassification.from_pretrained(saved_model).eval()
    processor = MnistImageProcessor.from_pretrained(saved_model)
    slow_inputs = processor([Image.fromarray(image) for image in pixels], return_tensors="pt")
    with torch.inference_mode():
        slow_classes = model(pixel_values=slow_inputs["pixel_values"]).logits.argmax(-1).tolist()

    assert [int(row["ImageId"]) for row in rows] == list(range(1, DIGIT_COUNT + 1))
    assert [row["Label"] for row in rows] == [model.config.id2label[index] for index in slow_classes]


# ---------------------------------------------------------------------------------------------------------
# MNIST-style step: digits already in MNIST's form pass through unchanged
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_sample_pixels() -> np.ndarray:
    images = datasets.Dataset.from_parquet(str(SAMPLE_PATH))["image"]
    return np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # (5000, 28, 28)


@pytest.fixture(scope="module")
def step_inputs(all_sample_pixels) -> dict[str, np.ndarray]:
    """The sample digits, and variants of them that the full step changes in different ways."""
    rng = np.random.default_rng(0)
    digits = all_sample_pixels[:500]
    return {
        "sample": all_sample_pixels,
        "shifted": np.stack([np.roll(digit, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1)) for digit in digits]),
        "dimmed": (digits * 0.8).astype(np.uint8),
        "noisy": np.clip(digits + rng.integers(0, 3, size=digits.shape), 0, 255).astype(np.uint8),
        "inverted": 255 - digits,
    }


STEP_SETTINGS = {
    "default": {},
    "invert never": {"invert": "never"},
    "invert always": {"invert": "always"},
    "no background correction": {"do_correct_background": False},
    "no crop": {"do_crop_to_digit": False},
    "no scaling": {"do_scale_digit": False},
    "box 28": {"digit_box_size": 28, "do_crop_to_digit": False},
    "box centred": {"do_center_of_mass": False},
}


@pytest.mark.parametrize("settings", STEP_SETTINGS.values(), ids=STEP_SETTINGS.keys())
def test_step_shortcut_equals_full_step(step_inputs, settings):
    normalization = MnistImageProcessor(**settings)._resolve_call_options({}).settings.mnist_normalization
    for name, pixels in step_inputs.items():
        frames, found = ipm._normalize_like_mnist(pixels, normalization)
        full_frames, full_found = ipm._normalize_in_chunks(pixels, normalization)

        assert np.array_equal(frames, full_frames), name
        assert np.array_equal(found, full_found), name


def test_step_shortcut_takes_nearly_every_sample_digit(all_sample_pixels):
    normalization = MnistImageProcessor()._resolve_call_options({}).settings.mnist_normalization

    unchanged = ipm._unchanged_by_step(all_sample_pixels, normalization)

    assert unchanged.sum() >= 0.99 * len(all_sample_pixels)


def test_step_shortcut_skips_moved_digits(step_inputs):
    normalization = MnistImageProcessor()._resolve_call_options({}).settings.mnist_normalization

    assert not ipm._unchanged_by_step(step_inputs["inverted"], normalization).any()
    assert ipm._unchanged_by_step(step_inputs["shifted"], normalization).mean() < 0.5


# ---------------------------------------------------------------------------------------------------------
# DigitTensors: read from the cache files, or through datasets
# ---------------------------------------------------------------------------------------------------------


def test_streamed_cache_equals_datasets_read(sample_digits):
    prepared = prepare_split(sample_digits, MnistImageProcessor())
    expected = prepared.with_format("numpy")[:]

    streamed = preprocessing._stream_cache_files(prepared, "pixel_values", labelled=True)

    assert streamed is not None
    assert np.array_equal(streamed["pixel_values"], expected["pixel_values"])
    assert np.array_equal(streamed["label"], expected["label"])


@pytest.mark.parametrize("reorder", ["shuffle", "select", "slice"])
def test_reordered_split_is_read_through_datasets(sample_digits, reorder):
    prepared = prepare_split(sample_digits, MnistImageProcessor())
    if reorder == "shuffle":
        split = prepared.shuffle(seed=0)
    elif reorder == "select":
        split = prepared.select([3, 1, 2])
    else:
        split = prepared.select(range(10, 20))

    tensors = DigitTensors(split)

    assert preprocessing._stream_cache_files(split, "pixel_values", labelled=True) is None
    assert torch.equal(tensors.pixel_values, torch.from_numpy(split.with_format("numpy")[:]["pixel_values"]))
    assert tensors.labels.tolist() == split["label"]


# ---------------------------------------------------------------------------------------------------------
# Batched pipeline: what the stock ImageClassificationPipeline returns
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifiers(saved_model):
    from transformers import ImageClassificationPipeline, pipeline

    batched = pipeline("image-classification", model=str(saved_model), trust_remote_code=True, device="cpu")
    stock = ImageClassificationPipeline(model=batched.model, image_processor=batched.image_processor)
    return batched, stock


def mixed_inputs(sample_digits, tmp_path) -> list:
    """Pillow images of several modes, an array and a file path: every route of the batched pipeline."""
    images = list(sample_digits["image"])[:20]
    path = tmp_path / "digit.png"
    images[7].save(path)
    rgba = images[3].convert("RGBA")
    rgba.putalpha(200)
    keyed = Image.open(io.BytesIO(png_bytes(images[4], transparency=255)))  # mode "L", strokes transparent
    return [
        *images[:12],
        images[12].convert("RGB"),
        images[13].convert("P"),
        rgba,
        keyed,
        str(path),
        np.asarray(images[16]),
    ]


def test_pipeline_builds_batched_class(classifiers, saved_model):
    batched, _ = classifiers

    assert type(batched).__name__ == "MnistImageClassificationPipeline"
    assert (saved_model / "pipeline_mnist.py").is_file()


def assert_same_results(results, expected):
    assert len(results) == len(expected)
    for result, reference in zip(results, expected, strict=True):
        assert [entry["label"] for entry in result][:1] == [entry["label"] for entry in reference][:1]
        scores = {entry["label"]: entry["score"] for entry in result}
        assert scores == pytest.approx({entry["label"]: entry["score"] for entry in reference}, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(
    "options",
    [{"top_k": 3}, {"top_k": None}, {"top_k": 1, "function_to_apply": "sigmoid"}, {"function_to_apply": "none"}],
    ids=["top 3", "all labels", "sigmoid", "raw logits"],
)
def test_batched_pipeline_equals_stock(classifiers, sample_digits, tmp_path, options):
    batched, stock = classifiers
    images = mixed_inputs(sample_digits, tmp_path)

    results = batched(images, batch_size=8, **options)
    expected = stock(images, batch_size=8, **options)

    assert_same_results(results, expected)


def test_batched_pipeline_streams_generators(classifiers, sample_digits):
    batched, stock = classifiers
    images = list(sample_digits["image"])[:10]

    results = batched((image for image in images), batch_size=4, top_k=2)

    assert not isinstance(results, list)
    assert_same_results(list(results), stock(images, top_k=2))


def test_batched_pipeline_single_image(classifiers, sample_digits):
    batched, stock = classifiers
    image = sample_digits["image"][0]

    assert_same_results([batched(image)], [stock(image)])


# ---------------------------------------------------------------------------------------------------------
# MnistTrainer: the stock Trainer's results, with less work per step
# ---------------------------------------------------------------------------------------------------------


def short_run(trainer_class, digit_tensors, output_dir, **overrides):
    from hf_mnist.train import MnistTrainingArguments

    args = MnistTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        logging_steps=3,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **overrides,
    )
    torch.manual_seed(0)
    trainer = trainer_class(
        model=MnistForImageClassification(MnistConfig()),
        args=args,
        data_collator=collate_digit_batch,
        train_dataset=digit_tensors,
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    "overrides",
    [{}, {"logging_first_step": True}, {"max_grad_norm": 0.5}],
    ids=["defaults", "first step logged", "clipping"],
)
def test_mnist_trainer_logs_what_trainer_logs(digit_tensors, tmp_path, overrides):
    from transformers import Trainer

    from hf_mnist.train import MnistTrainer

    ours = short_run(MnistTrainer, digit_tensors, tmp_path / "ours", **overrides)
    stock = short_run(Trainer, digit_tensors, tmp_path / "stock", **overrides)

    step_logs = [entry for entry in stock.state.log_history if "loss" in entry]
    assert len(step_logs) >= 4
    assert all("grad_norm" in entry for entry in step_logs)
    assert [entry for entry in ours.state.log_history if "loss" in entry] == step_logs
    assert ours.state.total_flos == stock.state.total_flos
    for ours_parameter, stock_parameter in zip(ours.model.parameters(), stock.model.parameters(), strict=True):
        assert torch.equal(ours_parameter, stock_parameter)


# ---------------------------------------------------------------------------------------------------------
# Decoding image cells: plain grey PNGs without Pillow, everything else with it
# ---------------------------------------------------------------------------------------------------------


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_plain_png_decoding_equals_pillow():
    table = datasets.Dataset.from_parquet(str(SAMPLE_PATH)).cast_column("image", datasets.Image(decode=False))
    cells = table["image"][:500]

    for cell in cells:
        pixels = preprocessing._plain_grey_png_pixels(cell["bytes"])
        assert pixels is not None
        assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(cell["bytes"]))))


def other_pngs(digit: Image.Image) -> dict[str, bytes]:
    """PNG files that the plain decoder leaves to Pillow."""
    corrupted = bytearray(png_bytes(digit))
    corrupted[-20] ^= 0xFF  # inside the IDAT data, so that its checksum fails
    with_transparency = png_bytes(digit, transparency=0)
    return {
        "filtered rows": png_bytes(Image.fromarray(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1)))),
        "16-bit": png_bytes(digit.convert("I;16")),
        "palette": png_bytes(digit.convert("P")),
        "RGB": png_bytes(digit.convert("RGB")),
        "transparency chunk": with_transparency,
        "bad checksum": bytes(corrupted),
        "JPEG": _jpeg_bytes(digit),
    }


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_other_files_go_to_pillow(sample_digits):
    for name, data in other_pngs(sample_digits["image"][0]).items():
        if name == "filtered rows":
            # Pillow's encoder filters rows of a gradient; the check needs a file that really has filters.
            raw = zlib.decompress(data[data.index(b"IDAT") + 4 : -16])
            assert raw[::29] != bytes(28)
        assert preprocessing._plain_grey_png_pixels(data) is None, name


def test_prepared_split_of_mixed_files_equals_processor_call(sample_digits):
    digit = sample_digits["image"][0]
    files = [png_bytes(digit), *(data for name, data in other_pngs(digit).items() if name != "bad checksum")]
    split = datasets.Dataset.from_dict(
        {"image": [{"bytes": data, "path": None} for data in files], "label": [0] * len(files)},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )

    tensors = DigitTensors(prepare_split(split, MnistImageProcessor()))
    expected = MnistImageProcessor()([Image.open(io.BytesIO(data)) for data in files], return_tensors="pt")

    assert torch.equal(tensors.pixel_values, expected["pixel_values"])


def test_corrupted_png_raises_pillow_error(sample_digits):
    data = other_pngs(sample_digits["image"][0])["bad checksum"]
    split = datasets.Dataset.from_dict(
        {"image": [{"bytes": data, "path": None}]}, features=datasets.Features({"image": datasets.Image()})
    )

    with pytest.raises(OSError, match="broken data stream"):
        Image.open(io.BytesIO(data)).load()
    with pytest.raises(OSError, match="broken data stream"):
        prepare_split(split, MnistImageProcessor())


# ---------------------------------------------------------------------------------------------------------
# Kaggle CSV: the uint8 read and the general read give the same digits
# ---------------------------------------------------------------------------------------------------------


def test_csv_uint8_read_equals_general_read(tmp_path, sample_digits):
    from hf_mnist.data import read_digit_csv

    pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in sample_digits["image"]]).reshape(-1, 784)
    labels = np.asarray(sample_digits["label"])
    rows = [[str(label), *map(str, row)] for label, row in zip(labels.tolist(), pixels.tolist(), strict=True)]
    header = ["label", *(f"pixel{index}" for index in range(784))]
    plain, decimal = tmp_path / "plain.csv", tmp_path / "decimal.csv"
    for path, table in ((plain, rows), (decimal, [[*rows[0][:5], f"{rows[0][5]}.0", *rows[0][6:]], *rows[1:]])):
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *table])

    plain_pixels, plain_labels = read_digit_csv(plain)
    decimal_pixels, decimal_labels = read_digit_csv(decimal)  # "N.0" fails the uint8 read

    assert np.array_equal(plain_pixels, pixels.reshape(-1, 28, 28))
    assert np.array_equal(plain_labels, labels)
    assert np.array_equal(decimal_pixels, plain_pixels)
    assert np.array_equal(decimal_labels, plain_labels)


def test_mnist_trainer_restores_accelerate_check(digit_tensors, tmp_path):
    import accelerate.optimizer

    from hf_mnist.train import MnistTrainer

    check = accelerate.optimizer.is_lomo_available

    short_run(MnistTrainer, digit_tensors, tmp_path)

    assert accelerate.optimizer.is_lomo_available is check


@pytest.mark.parametrize(("weight_decay", "group_sizes"), [(0.0, [6, 0]), (0.01, [3, 3])])
def test_mnist_trainer_splits_decay_only_with_weight_decay(digit_tensors, tmp_path, weight_decay, group_sizes):
    from hf_mnist.train import MnistTrainer

    trainer = short_run(MnistTrainer, digit_tensors, tmp_path, weight_decay=weight_decay)

    assert [len(group["params"]) for group in trainer.optimizer.param_groups] == group_sizes


# ---------------------------------------------------------------------------------------------------------
# Frames: splits for a backbone store 28 x 28 frames and resize each batch
# ---------------------------------------------------------------------------------------------------------

BACKBONE_PROCESSOR = {"size": 40, "num_channels": 3, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]}


def test_frames_then_pixel_values_equal_processor_call(sample_digits):
    processor = MnistImageProcessor(**BACKBONE_PROCESSOR)
    images = list(sample_digits["image"])

    frames, digit_found = processor.to_mnist_frames(images)
    pixel_values = processor.pixel_values_from_frames(frames)
    expected = processor(images, return_tensors="pt")

    assert frames.shape == (DIGIT_COUNT, 28, 28)
    assert frames.dtype == np.uint8
    assert torch.equal(pixel_values, expected["pixel_values"])
    assert torch.equal(torch.from_numpy(digit_found), expected["digit_found"])


def test_split_for_backbone_stores_frames(sample_digits):
    processor = MnistImageProcessor(**BACKBONE_PROCESSOR)

    prepared = prepare_split(sample_digits, processor)

    assert preprocessing.stores_frames(processor)
    assert prepared.column_names == ["frames", "label"]
    assert not preprocessing.stores_frames(MnistImageProcessor())
    assert not preprocessing.stores_frames(MnistImageProcessor(size=40, do_mnist_normalize=False))


def test_frame_batches_equal_processor_call(sample_digits):
    processor = MnistImageProcessor(**BACKBONE_PROCESSOR)
    tensors = DigitTensors(prepare_split(sample_digits, processor), processor)
    indices = [5, 0, 63, 17, 17, 2]

    batch = tensors.__getitems__(indices)
    expected = processor([sample_digits["image"][index] for index in indices], return_tensors="pt")

    assert tensors.pixel_values is None
    assert tensors.frames.dtype == torch.uint8
    assert len(tensors) == DIGIT_COUNT
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])
    assert batch["labels"].tolist() == [sample_digits["label"][index] for index in indices]
    assert torch.equal(tensors[17]["pixel_values"], expected["pixel_values"][3])


def test_frames_need_the_processor(sample_digits):
    prepared = prepare_split(sample_digits, MnistImageProcessor(**BACKBONE_PROCESSOR))

    with pytest.raises(ValueError, match=r"contains 28 x 28 frames.*DigitTensors\(split, image_processor\)"):
        DigitTensors(prepared)


def test_to_mnist_frames_needs_the_step(sample_digits):
    with pytest.raises(ValueError, match="to_mnist_frames needs do_mnist_normalize=True"):
        MnistImageProcessor(do_mnist_normalize=False).to_mnist_frames(sample_digits["image"][:2])


# ---------------------------------------------------------------------------------------------------------
# Edge cases met while trying the README as a new user
# ---------------------------------------------------------------------------------------------------------


def test_blank_image_raises_no_numpy_warning():
    blank = Image.new("L", (28, 28))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = MnistImageProcessor()([blank, blank], return_tensors="np")

    assert not output["digit_found"].any()


def test_missing_csv_is_named_with_its_fix(tmp_path):
    from hf_mnist.data import read_digit_csv

    with pytest.raises(FileNotFoundError, match=r"CSV file .*absent.csv not found; pass the path of a Kaggle"):
        read_digit_csv(tmp_path / "absent.csv")


@pytest.mark.parametrize(("rank", "level"), [("0", logging.INFO), ("1", logging.WARNING)])
def test_logging_without_training_arguments_follows_rank(monkeypatch, rank, level):
    from hf_mnist.cli import setup_logging

    library_logger = logging.getLogger("hf_mnist")
    monkeypatch.setattr(library_logger, "level", library_logger.level)  # restored after the test
    monkeypatch.setenv("RANK", rank)
    # Keep the rest of this process's logging set-up as it is.
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    for name in ("set_verbosity", "enable_default_handler", "enable_explicit_format"):
        monkeypatch.setattr(f"transformers.utils.logging.{name}", lambda *args: None)
    monkeypatch.setattr("datasets.utils.logging.set_verbosity", lambda *args: None)

    setup_logging()

    assert library_logger.level == level
