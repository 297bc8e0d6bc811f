"""Image processor that turns digits in any common form into MNIST-style `pixel_values`.

`MnistImageProcessor` reduces every input to one grey channel of intensities on the 0-255 scale, resizes it
to `size`, rescales and normalizes it, and repeats it to `num_channels` (3 for RGB backbones). The output is
a `BatchFeature` whose `pixel_values` have shape (batch, num_channels, height, width) and dtype float32.

Conversion rules:

* Colour becomes luminance with the ITU-R 601-2 weights (0.299, 0.587, 0.114), the rule of Pillow's
  `convert("L")`. Pillow images are converted by Pillow itself. uint8 arrays use Pillow's 16-bit fixed-point
  integers, so an RGB array and the same RGB Pillow image give identical results. Float arrays use the
  weights in float32.
* Transparency (RGBA, LA, PA, P or RGB with a transparency key, 4-channel arrays) is flattened onto black or
  white, whichever contrasts with the visible content. If the alpha-weighted mean luminance of the image is
  at least mid-grey (light strokes), the background is black. Otherwise (dark strokes) it is white, and a
  fully transparent image becomes black. Black strokes on a transparent background therefore stay visible,
  but come out dark on light, the opposite of MNIST's light digits on black.
* Integer depths: uint8 is used as is and bool maps to 0 or 255. Other unsigned types are scaled by their
  dtype range (uint16: x * 255 / 65535). Signed types (what numpy, torch and Pillow mode "I" produce by
  default) carry no depth, so it is inferred per array: a maximum of at most 255 is read as 8-bit, one of
  at most 65535 as 16-bit; negative or larger values raise `ValueError`.
* Floats in numpy arrays and torch tensors must be intensities in [0, 1] (the torchvision convention).
  Values outside [0, 1] by more than 1e-3, which is what 0-255 data or already-normalized values look like,
  raise `ValueError`; smaller excursions are clipped. Pillow mode "F" images are read on the 0-255 scale
  that Pillow's own `convert("F")` produces, unless their maximum is at most 1, in which case they are read
  as [0, 1].

Layout rules for numpy arrays and torch tensors (channels C in {1, 3, 4}: grey, RGB, RGBA):

* (H, W) is one grey image. (H, W, C) and (C, H, W) are one image. The channel axis is the end axis whose
  size is 1, 3 or 4; if both ends qualify, the first one is the channel axis, as transformers'
  `infer_channel_dimension_format` decides. `input_data_format="channels_first"` or `"channels_last"`
  overrides the guess.
* A 3-D array whose end axes are both larger than 4 is a batch (B, H, W) of grey images. Otherwise it is one
  image (and an end axis of size 2 raises, since grey plus alpha is not supported). So a grey batch of at
  most 4 images cannot be passed as a 3-D array; pass it as (B, 1, H, W) or as a list.
* (B, C, H, W) and (B, H, W, C) are batches, with the channel axis found as for one image.

Preprocessing runs on whole batches in numpy and torch. Images of one size are stacked and resized in one
`torch.nn.functional.interpolate` call (antialiased when shrinking); when every image is already uint8 at
the target size, rescale and normalize are one lookup in a 256-entry table per channel. The table holds the
same float32 multiply-add that resized images go through, so the two routes agree bit for bit on the same
values. `preprocess_uint8` exposes the batch route for training data.

This file is shipped to the Hub next to the model and loaded with `trust_remote_code=True` where `hf_mnist`
is not installed, so it imports only the standard library, numpy, Pillow, torch and transformers.
"""

import copy
import math
import numbers
import operator
import os
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Mean and standard deviation of the pixel intensities of the 60,000 MNIST training images, scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# ITU-R 601-2 luma weights times 2**16, which sum to 2**16. With rounding half up, these integers reproduce
# Pillow's RGB to "L" conversion bit for bit (checked in tests/test_image_processing.py).
_LUMA_FIXED_POINT = (19595, 38470, 7471)
_LUMA_FLOAT = (0.299, 0.587, 0.114)

# Channel counts that an array or tensor image may have: grey, RGB, RGBA.
_CHANNEL_SIZES = (1, 3, 4)

# A 3-D array with an end axis of at most this size is one image, not a (B, H, W) batch, because no digit is
# 4 pixels wide. Counting size 2 sends grey-plus-alpha arrays to the "unsupported channels" error.
_MAX_CHANNEL_AXIS_SIZE = 4

# How far float images may stray outside [0, 1] before they are rejected instead of clipped.
_FLOAT_RANGE_TOLERANCE = 1e-3

_PIL_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_PIL_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

_TORCH_INTERPOLATION = {
    PILImageResampling.NEAREST: "nearest-exact",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}

# Processor parameters that shape the output, saved in preprocessor_config.json.
_PARAMETER_NAMES = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "num_channels",
)

# Standard transformers options that this processor does not implement, with the values that leave them off.
_UNSUPPORTED_OPTIONS = {
    "do_center_crop": (None, False),
    "crop_size": (None,),
    "do_pad": (None, False),
    "pad_size": (None,),
    "do_convert_rgb": (None, False),
    "default_to_square": (None, True),
    "data_format": (None, "channels_first"),
}

_CALL_OPTION_NAMES = ("return_tensors", "input_data_format", "device")


class MnistImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of `MnistImageProcessor`: the standard image-processor ones plus `num_channels`."""

    num_channels: int | None


@dataclass(frozen=True)
class _Settings:
    """Validated processor parameters, with rescale and normalize fused into one multiply-add per channel."""

    do_resize: bool
    height: int
    width: int
    resample: PILImageResampling
    num_channels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    scale: np.ndarray  # (1, num_channels, 1, 1) float32
    offset: np.ndarray  # (1, num_channels, 1, 1) float32
    lookup_table: np.ndarray  # (num_channels, 256) float32: output value of each uint8 intensity


class _CallOptions(NamedTuple):
    """Options of one call: the processor settings and the per-call output and layout choices."""

    settings: _Settings
    return_tensors: str | None
    input_data_format: str | None
    device: str | torch.device | None


class MnistImageProcessor(BaseImageProcessor):
    r"""
    Image processor for MNIST-style digit classifiers.

    Accepts one image or a list of images: Pillow images of any mode, numpy arrays, torch tensors, or paths
    of image files, plus stacked batches as 3-D or 4-D arrays and tensors. The module docstring states the
    conversion and layout rules.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize images whose size differs from `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 28, "width": 28}`):
            Output size. An int gives a square; a (height, width) pair is accepted too.
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            Interpolation for resizing: NEAREST, BILINEAR or BICUBIC, run by torch.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply the 0-255 intensities by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Scale factor applied before normalizing.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to subtract `image_mean` and divide by `image_std`.
        image_mean (`float` or `list[float]`, *optional*, defaults to `[0.1307]`):
            One value shared by all output channels, or one value per output channel.
        image_std (`float` or `list[float]`, *optional*, defaults to `[0.3081]`):
            Like `image_mean`; every value must be positive.
        num_channels (`int`, *optional*, defaults to 1):
            Output channels: 1, or 3 for RGB backbones (the grey channel repeated).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = MnistImageProcessorKwargs

    do_resize = True
    size = {"height": 28, "width": 28}
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [MNIST_MEAN]
    image_std = [MNIST_STD]
    num_channels = 1

    def __init__(self, **kwargs: Unpack[MnistImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

        # Validate once here, so that an invalid config fails when it is loaded rather than on first use.
        options = self._resolve_call_options({})
        self.image_mean = options.settings.image_mean
        self.image_std = options.settings.image_std

    def _standardize_kwargs(self, size: Any = None, **kwargs: Any) -> dict:
        # Convert `size` here rather than in transformers' `get_size_dict`, whose int rule depends on
        # `default_to_square` and whose errors do not name this processor's accepted forms.
        if size is not None:
            height, width = _size_to_pair(size)
            size = SizeDict(height=height, width=width)
        return super()._standardize_kwargs(size=size, **kwargs)

    def preprocess(self, images: Any, **kwargs: Unpack[MnistImageProcessorKwargs]) -> BatchFeature:
        """
        Convert one image or a batch of images to `pixel_values`, shape (batch, num_channels, height, width).

        Keyword arguments override the processor parameters for this call. `return_tensors` selects "pt"
        (a torch tensor), "np" (a numpy array) or None (a list of (num_channels, height, width) arrays);
        `input_data_format` fixes the channel axis of array inputs; `device` moves a "pt" result.
        """
        options = self._resolve_call_options(dict(kwargs))
        stacks = _decode_images(images, options.input_data_format)
        pixel_values = _pixel_values_from_stacks(stacks, options.settings)
        return _to_batch_feature(pixel_values, options.return_tensors, options.device)

    def preprocess_uint8(
        self, images: np.ndarray | torch.Tensor, return_tensors: str = "np"
    ) -> np.ndarray | torch.Tensor:
        """
        Preprocess a stacked batch of grey uint8 digits, as training data loaders hold them.

        `images` has shape (N, H, W) and dtype uint8; the result has shape (N, num_channels, height, width)
        and dtype float32, as a numpy array (`return_tensors="np"`) or a torch tensor ("pt"). The values
        equal, bit for bit, those of calling the processor on the same images as a list of mode "L" Pillow
        images, because both run the same batch code on the same stacked array.
        """
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if not isinstance(images, np.ndarray) or images.ndim != 3 or images.dtype != np.uint8:
            if isinstance(images, np.ndarray):
                description = f"shape {images.shape} and dtype {images.dtype}"
            else:
                description = type(images).__name__
            raise ValueError(
                f"preprocess_uint8 expects a (N, H, W) uint8 array or tensor, got {description}. "
                "Call the processor itself for other inputs."
            )
        if return_tensors not in ("np", "pt"):
            raise ValueError(f"return_tensors must be 'np' or 'pt' for preprocess_uint8, got {return_tensors!r}.")

        settings = self._resolve_call_options({}).settings
        pixel_values = _pixel_values_from_stack(images, settings)
        return torch.from_numpy(pixel_values) if return_tensors == "pt" else pixel_values

    def _resolve_call_options(self, overrides: dict[str, Any]) -> _CallOptions:
        """Merge per-call `overrides` (consumed) into the instance parameters and validate the result."""
        return_tensors = overrides.pop("return_tensors", getattr(self, "return_tensors", None))
        if return_tensors is not None:
            return_tensors = str(getattr(return_tensors, "value", return_tensors))  # TensorType -> "pt"
            if return_tensors not in ("pt", "np"):
                raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")

        input_data_format = overrides.pop("input_data_format", getattr(self, "input_data_format", None))
        if input_data_format is not None:
            input_data_format = str(getattr(input_data_format, "value", input_data_format))
            if input_data_format not in ("channels_first", "channels_last"):
                raise ValueError(
                    "input_data_format must be 'channels_first', 'channels_last' or None (guess from the "
                    f"shape), got {input_data_format!r}."
                )

        device = overrides.pop("device", getattr(self, "device", None))
        if device is not None and return_tensors != "pt":
            raise ValueError(f"device is only used with return_tensors='pt', got return_tensors={return_tensors!r}.")

        return _CallOptions(self._resolve_settings(overrides), return_tensors, input_data_format, device)

    def _resolve_settings(self, overrides: dict[str, Any]) -> _Settings:
        """Validate the processor parameters merged with per-call `overrides` (consumed) into `_Settings`."""
        snapshot = _freeze_size(_read_setting_attributes(self))
        has_overrides = bool(overrides)
        if not has_overrides:
            # Calls without overrides, such as the pipeline's, reuse the last result while the parameters
            # compare equal to a deep copy of those that produced it.
            cached = _SETTINGS_CACHE.get(self)
            if cached is not None and _snapshots_equal(cached[0], snapshot):
                return cached[1]

        values = dict(zip(_SETTING_ATTRIBUTE_NAMES, _read_setting_attributes(self), strict=True))
        for name in list(overrides):
            if name in values:
                override = overrides.pop(name)
                if override is not None:  # None keeps the processor's value, as in other processors
                    values[name] = override
        if overrides:
            accepted = sorted((*_PARAMETER_NAMES, *_CALL_OPTION_NAMES))
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {sorted(overrides)}; accepted: {accepted}."
            )
        for name, allowed in _UNSUPPORTED_OPTIONS.items():
            if values[name] not in allowed:
                raise ValueError(
                    f"{type(self).__name__} does not support {name}={values[name]!r}; leave {name} unset "
                    f"(allowed values: {list(allowed)})."
                )

        settings = _validated_settings(
            do_resize=values["do_resize"],
            size=_size_to_pair(values["size"]),
            resample=values["resample"],
            do_rescale=values["do_rescale"],
            rescale_factor=values["rescale_factor"],
            do_normalize=values["do_normalize"],
            image_mean=_as_hashable(values["image_mean"]),
            image_std=_as_hashable(values["image_std"]),
            num_channels=values["num_channels"],
        )
        if not has_overrides:
            _SETTINGS_CACHE[self] = (copy.deepcopy(snapshot), settings)
        return settings


# Attributes that `_resolve_settings` reads: the parameters and the unsupported standard options.
_SETTING_ATTRIBUTE_NAMES = (*_PARAMETER_NAMES, *_UNSUPPORTED_OPTIONS)
_read_setting_attributes = operator.attrgetter(*_SETTING_ATTRIBUTE_NAMES)
_SIZE_INDEX = _SETTING_ATTRIBUTE_NAMES.index("size")

# Processor -> (attribute snapshot, `_Settings`) of its last call without overrides. Weak keys let processors
# be garbage-collected, and keeping the cache out of the instance keeps it out of `to_dict`.
_SETTINGS_CACHE = weakref.WeakKeyDictionary()


def _freeze_size(snapshot: tuple) -> tuple:
    """Replace a `SizeDict` in an attribute snapshot by a tuple, which compares much faster."""
    size = snapshot[_SIZE_INDEX]
    if not isinstance(size, SizeDict):
        return snapshot
    return (*snapshot[:_SIZE_INDEX], (SizeDict, *vars(size).items()), *snapshot[_SIZE_INDEX + 1 :])


def _snapshots_equal(first: tuple, second: tuple) -> bool:
    try:
        return bool(first == second)
    except (ValueError, TypeError):
        return False  # e.g. numpy arrays assigned as parameters, whose == is elementwise


# ---------------------------------------------------------------------------------------------------------
# Parameter validation
# ---------------------------------------------------------------------------------------------------------


def _size_to_pair(size: Any) -> tuple[int, int]:
    """Return `size` as (height, width), accepting an int, a pair, a dict or a `SizeDict`."""
    if isinstance(size, SizeDict):
        candidate = {key: value for key, value in vars(size).items() if value is not None}
    else:
        candidate = size
    pair = None
    if isinstance(candidate, int) and not isinstance(candidate, bool):
        pair = (candidate, candidate)
    elif isinstance(candidate, (list, tuple)) and len(candidate) == 2:
        pair = tuple(candidate)
    elif isinstance(candidate, dict) and set(candidate) == {"height", "width"}:
        pair = (candidate["height"], candidate["width"])

    is_positive_int = [isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair or ()]
    if pair is None or not all(is_positive_int):
        raise ValueError(
            "size must be a positive int, a (height, width) pair or a dict with positive int 'height' and "
            f"'width', got {size!r}."
        )
    return pair


def _as_hashable(value: Any) -> Any:
    """Turn list-like parameter values into tuples so that `_build_settings` can cache on them."""
    if isinstance(value, np.ndarray):
        return tuple(value.ravel().tolist())
    if isinstance(value, list):
        return tuple(value)
    return value


def _is_real_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _per_channel(name: str, value: Any, num_channels: int) -> tuple[float, ...]:
    """Validate a mean or std parameter and expand a single value to one value per output channel."""
    values = (value,) if not isinstance(value, tuple) else value
    if not values or not all(_is_real_number(v) for v in values):
        raise ValueError(f"{name} must be a finite number or a list of finite numbers, got {value!r}.")
    if len(values) == 1:
        values = values * num_channels
    if len(values) != num_channels:
        raise ValueError(
            f"{name} must have 1 value or one per output channel (num_channels={num_channels}), "
            f"got {len(values)} values: {list(values)}."
        )
    return tuple(float(v) for v in values)


def _validated_settings(**parameters: Any) -> _Settings:
    """Return the cached `_Settings` for `parameters`, bypassing the cache for unhashable values."""
    try:
        return _build_settings(**parameters)
    except TypeError:
        # Unhashable values are invalid anyway, and the uncached call raises the ValueError that names them.
        return _build_settings.__wrapped__(**parameters)


# `typed` keeps True and 1 apart, so a cached result for one never validates the other.
@lru_cache(maxsize=32, typed=True)
def _build_settings(
    do_resize: Any,
    size: tuple[int, int],
    resample: Any,
    do_rescale: Any,
    rescale_factor: Any,
    do_normalize: Any,
    image_mean: Any,
    image_std: Any,
    num_channels: Any,
) -> _Settings:
    """Validate the processor parameters and precompute the fused rescale and normalize constants."""
    for name, flag in (("do_resize", do_resize), ("do_rescale", do_rescale), ("do_normalize", do_normalize)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}.")
    if num_channels not in (1, 3) or isinstance(num_channels, bool):
        raise ValueError(f"num_channels must be 1 (grey) or 3 (grey repeated for RGB backbones), got {num_channels!r}.")
    if resample not in _TORCH_INTERPOLATION or isinstance(resample, bool):
        raise ValueError(
            f"resample must be PILImageResampling.NEAREST (0), BILINEAR (2) or BICUBIC (3), got {resample!r}."
        )
    if not _is_real_number(rescale_factor) or rescale_factor <= 0:
        raise ValueError(f"rescale_factor must be a positive number, got {rescale_factor!r}.")
    mean = _per_channel("image_mean", image_mean, num_channels)
    std = _per_channel("image_std", image_std, num_channels)
    if any(s <= 0 for s in std):
        raise ValueError(f"image_std values must all be positive, got {list(std)}.")

    # (x * rescale - mean) / std == x * scale + offset, computed in float64 and stored as float32.
    rescale = rescale_factor if do_rescale else 1.0
    if do_normalize:
        scale = [rescale / s for s in std]
        offset = [-m / s for m, s in zip(mean, std, strict=True)]
    else:
        scale = [rescale] * num_channels
        offset = [0.0] * num_channels
    scale = np.asarray(scale, dtype=np.float32).reshape(1, num_channels, 1, 1)
    offset = np.asarray(offset, dtype=np.float32).reshape(1, num_channels, 1, 1)

    # The table is the float32 multiply-add of `_multiply_add` applied to every uint8 level.
    levels = np.arange(256, dtype=np.float32)
    lookup_table = levels[None, :] * scale[0, :, :, 0] + offset[0, :, :, 0]  # (num_channels, 256)
    for array in (scale, offset, lookup_table):
        array.flags.writeable = False

    return _Settings(
        do_resize=do_resize,
        height=size[0],
        width=size[1],
        resample=PILImageResampling(resample),
        num_channels=num_channels,
        image_mean=mean,
        image_std=std,
        scale=scale,
        offset=offset,
        lookup_table=lookup_table,
    )


# ---------------------------------------------------------------------------------------------------------
# Decoding: every input becomes a stack of grey images, shape (n, H, W), uint8 or float32 on the 0-255 scale
# ---------------------------------------------------------------------------------------------------------


def _decode_images(images: Any, input_data_format: str | None) -> list[np.ndarray]:
    """Decode a single image, a list of images or a stacked batch into a list of (n, H, W) grey stacks."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list; pass at least one image.")
        return [_decode_single_image(image, input_data_format) for image in images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return [_grey_from_array(_array_from(images), input_data_format, allow_batch=True)]
    return [_decode_single_image(images, input_data_format)]


def _decode_single_image(image: Any, input_data_format: str | None) -> np.ndarray:
    """Decode one image of any accepted kind into a (1, H, W) grey stack."""
    if isinstance(image, Image.Image):
        return _grey_from_pil(image)[None]
    if isinstance(image, (str, os.PathLike)):
        return _grey_from_pil(_open_image_file(image))[None]
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return _grey_from_array(_array_from(image), input_data_format, allow_batch=False)
    if isinstance(image, (list, tuple)):
        raise ValueError("images must be a flat list of images; nested lists are not supported.")
    raise TypeError(
        f"Unsupported image type {type(image).__name__}; pass a PIL image, a numpy array, a torch tensor or "
        "the path of an image file."
    )


def _open_image_file(path: str | os.PathLike) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Image file {str(path)!r} not found. A string image must be the path of an existing image file; "
            "URLs are not fetched (the image-classification pipeline loads them)."
        )
    with Image.open(path) as image:
        image.load()
        return ImageOps.exif_transpose(image)


def _array_from(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return a numpy view or copy of a numpy array or a torch tensor on any device."""
    if isinstance(image, np.ndarray):
        return image
    tensor = image.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # numpy has no bfloat16
    return tensor.numpy()


def _grey_from_pil(image: Image.Image) -> np.ndarray:
    """Decode a Pillow image into an (H, W) grey image, uint8 or float32 on the 0-255 scale."""
    mode = image.mode
    if mode in _PIL_ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        grey = _pil_bytes(rgba.convert("L"))  # Pillow's luminance ignores alpha
        alpha = _pil_bytes(rgba.getchannel("A"))
        return _flatten_alpha(grey[None], alpha[None])[0]
    if mode == "L":
        return _pil_bytes(image)
    if mode in _PIL_UINT16_MODES or mode == "I":
        return _intensities(np.asarray(image))
    if mode == "F":
        return _pil_float_intensities(np.asarray(image))

    try:
        grey_image = image.convert("L")
    except ValueError as err:
        raise ValueError(f"Unsupported PIL image mode {mode!r}: Pillow cannot convert it to 'L'.") from err
    return _pil_bytes(grey_image)


def _pil_bytes(image: Image.Image) -> np.ndarray:
    """Return an 8-bit single-band Pillow image as an (H, W) uint8 array, faster than `np.asarray`."""
    # Timed with Pillow 13 on 28 x 28 images, where `np.asarray` took about 1.4 times as long.
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.height, image.width)


def _grey_from_array(array: np.ndarray, input_data_format: str | None, allow_batch: bool) -> np.ndarray:
    """Decode an array image or batch into an (n, H, W) grey stack."""
    if array.size == 0:
        raise ValueError(f"images must not be empty, got an array of shape {tuple(array.shape)}.")
    pixels = _intensities(_to_batched_channels_last(array, input_data_format, allow_batch))  # (n, H, W, C)

    channels = pixels.shape[-1]
    if channels == 1:
        return pixels[..., 0]
    grey = _luminance(pixels[..., :3])
    if channels == 3:
        return grey
    return _flatten_alpha(grey, pixels[..., 3])


def _to_batched_channels_last(array: np.ndarray, input_data_format: str | None, allow_batch: bool) -> np.ndarray:
    """Apply the layout rules of the module docstring and return shape (n, H, W, C) with C in {1, 3, 4}."""
    shape = tuple(array.shape)
    if array.ndim == 2:
        return array[None, :, :, None]  # (H, W) -> (1, H, W, 1)
    if array.ndim == 3:
        has_channel_end = min(shape[0], shape[-1]) <= _MAX_CHANNEL_AXIS_SIZE
        if allow_batch and input_data_format is None and not has_channel_end:
            return array[..., None]  # (B, H, W) -> (B, H, W, 1)
        if _is_channels_first(shape[0], shape[-1], input_data_format, shape):
            array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
        return array[None]
    if array.ndim == 4 and allow_batch:
        if _is_channels_first(shape[1], shape[-1], input_data_format, shape):
            array = np.moveaxis(array, 1, -1)  # (B, C, H, W) -> (B, H, W, C)
        return array

    allowed = "(H, W), (H, W, C) or (C, H, W)"
    if allow_batch:
        allowed += ", or a batch (B, H, W), (B, C, H, W) or (B, H, W, C)"
    raise ValueError(
        f"Unsupported image array shape {shape} ({array.ndim} dimensions); expected {allowed} "
        f"with C in {_CHANNEL_SIZES}."
    )


def _is_channels_first(first: int, last: int, input_data_format: str | None, shape: tuple[int, ...]) -> bool:
    """Decide whether the channel axis is the first or the last candidate axis of an array of `shape`."""
    if input_data_format == "channels_first":
        channels_first = True
    elif input_data_format == "channels_last":
        channels_first = False
    elif first in _CHANNEL_SIZES:
        channels_first = True  # ties go to the first axis, as in transformers' infer_channel_dimension_format
    elif last in _CHANNEL_SIZES:
        channels_first = False
    else:
        raise ValueError(
            f"Cannot find a channel axis of size 1, 3 or 4 (grey, RGB, RGBA) in image array shape {shape}. "
            "Other channel counts, such as 2 for grey plus alpha, are not supported; convert the image first."
        )

    channels = first if channels_first else last
    if channels not in _CHANNEL_SIZES:
        raise ValueError(
            f"Image array shape {shape} with input_data_format={input_data_format!r} has {channels} "
            f"channels; expected one of {_CHANNEL_SIZES}."
        )
    return channels_first


def _intensities(pixels: np.ndarray) -> np.ndarray:
    """Return `pixels` on the 0-255 scale: uint8 unchanged, other dtypes as float32 (rules in module doc)."""
    dtype = pixels.dtype
    if dtype == np.uint8:
        return pixels
    if dtype == np.bool_:
        return pixels.astype(np.uint8) * np.uint8(255)
    if dtype.kind == "u":
        return (pixels.astype(np.float64) * 255 / np.iinfo(dtype).max).astype(np.float32)
    if dtype.kind == "i":
        return _signed_intensities(pixels)
    if dtype.kind == "f":
        return _float_intensities(pixels)
    raise ValueError(f"Unsupported image dtype {dtype}; expected an unsigned, signed, bool or float dtype.")


def _signed_intensities(pixels: np.ndarray) -> np.ndarray:
    """Read a signed-integer image as 8-bit or 16-bit data, inferred from its maximum."""
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
        raise ValueError(
            f"Signed integer image ({pixels.dtype}) has values in [{low}, {high}], outside [0, 65535]. "
            "Cast 8-bit data to uint8 or 16-bit data to uint16 to state the range."
        )
    if high <= 255:
        return pixels.astype(np.uint8)
    # NOTE: a 16-bit image whose values all stay at or below 255 is read as 8-bit, so it comes out 257 times
    # brighter. Casting such data to uint16 avoids the guess.
    return (pixels.astype(np.float64) * 255 / 65535).astype(np.float32)


def _float_intensities(pixels: np.ndarray) -> np.ndarray:
    """Map float intensities in [0, 1] to the 0-255 scale and reject values clearly outside [0, 1]."""
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("Float image contains NaN or infinite values.")
    if low < -_FLOAT_RANGE_TOLERANCE or high > 1 + _FLOAT_RANGE_TOLERANCE:
        raise ValueError(
            f"Float image has values in [{low:g}, {high:g}], but float images must hold intensities in "
            "[0, 1]. Divide 0-255 data by 255 (or pass it as uint8); do not pass already-normalized "
            "pixel_values."
        )
    return np.clip(pixels.astype(np.float32) * np.float32(255), 0, 255)


def _pil_float_intensities(pixels: np.ndarray) -> np.ndarray:
    """Read a Pillow mode "F" image on the 0-255 scale, or on [0, 1] if its maximum is at most 1."""
    high = float(pixels.max())
    if high <= 1:
        return _float_intensities(pixels)
    low = float(pixels.min())
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 255 + _FLOAT_RANGE_TOLERANCE:
        raise ValueError(f"PIL mode 'F' image has values in [{low:g}, {high:g}]; expected the 0-255 scale or [0, 1].")
    return np.clip(pixels, 0, 255).astype(np.float32)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Return the ITU-R 601-2 luminance of (..., 3) intensities, rounded like Pillow's for uint8 input."""
    if rgb.dtype == np.uint8:
        red, green, blue = (rgb[..., i].astype(np.uint32) for i in range(3))
        weighted = red * _LUMA_FIXED_POINT[0] + green * _LUMA_FIXED_POINT[1] + blue * _LUMA_FIXED_POINT[2]
        return ((weighted + (1 << 15)) >> 16).astype(np.uint8)
    weights = np.asarray(_LUMA_FLOAT, dtype=np.float32)
    return rgb.astype(np.float32) @ weights


def _flatten_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """
    Composite (n, H, W) grey images with (n, H, W) alpha, both on the 0-255 scale, onto black or white.

    Each image gets the background that contrasts with its alpha-weighted mean luminance, so that strokes
    drawn on a transparent canvas stay visible whatever their colour.
    """
    if alpha.dtype == np.uint8 and alpha.min() == 255:
        return grey  # fully opaque, so nothing to composite, and uint8 keeps the lookup-table route

    grey = grey.astype(np.float32)
    alpha = alpha.astype(np.float32)
    coverage = alpha.sum(axis=(1, 2))  # (n,)
    weighted_luminance = (grey * alpha).sum(axis=(1, 2))  # (n,)
    mean_luminance = np.divide(weighted_luminance, coverage, out=np.zeros_like(coverage), where=coverage > 0)
    light_or_empty = (mean_luminance >= 127.5) | (coverage == 0)
    background = np.where(light_or_empty, 0.0, 255.0).astype(np.float32)  # (n,)

    if np.any(background == 255):
        logger.warning_once(
            "Flattened an image with dark strokes on a transparent background onto white. The digit is now "
            "dark on light, while MNIST digits are light on black; invert such images if the model expects "
            "MNIST polarity."
        )
    # Integers up to 255 * 255 are exact in float32, so one rounding happens, at the division.
    background = background[:, None, None]
    return (grey * alpha + background * (255 - alpha)) / 255


# ---------------------------------------------------------------------------------------------------------
# Batch processing: resize, fused rescale and normalize, channel repeat
# ---------------------------------------------------------------------------------------------------------


def _pixel_values_from_stacks(stacks: list[np.ndarray], settings: _Settings) -> np.ndarray | list[np.ndarray]:
    """
    Process grey stacks into pixel values, in input order.

    Returns one (B, num_channels, height, width) array when every image ends at one size, else (only with
    do_resize=False and mixed sizes) a list of (num_channels, H, W) arrays.
    """
    if len(stacks) == 1:
        return _pixel_values_from_stack(stacks[0], settings)

    # Group by image size, so that each size is resized and normalized in one batched call.
    groups: dict[tuple[int, int], tuple[list[int], list[np.ndarray]]] = {}
    position = 0
    for stack in stacks:
        count = stack.shape[0]
        positions, members = groups.setdefault(stack.shape[1:], ([], []))
        positions.extend(range(position, position + count))
        members.append(stack)
        position += count

    processed = []
    for positions, members in groups.values():
        stack = members[0] if len(members) == 1 else np.concatenate(members)
        processed.append((positions, _pixel_values_from_stack(stack, settings)))
    if len(processed) == 1:
        return processed[0][1]

    output_shapes = {values.shape[1:] for _, values in processed}
    if len(output_shapes) == 1:
        output = np.empty((position, *output_shapes.pop()), dtype=np.float32)  # (B, C, h, w)
        for positions, values in processed:
            output[positions] = values
        return output

    images: list[np.ndarray | None] = [None] * position
    for positions, values in processed:
        for index, image in zip(positions, values, strict=True):
            images[index] = image
    return images


def _pixel_values_from_stack(stack: np.ndarray, settings: _Settings) -> np.ndarray:
    """Resize and normalize one (n, H, W) grey stack into (n, num_channels, h, w) float32."""
    if settings.do_resize and stack.shape[1:] != (settings.height, settings.width):
        stack = _resize(stack, settings.height, settings.width, settings.resample)
    return _multiply_add(stack, settings)


def _resize(stack: np.ndarray, height: int, width: int, resample: PILImageResampling) -> np.ndarray:
    """Resize an (n, H, W) stack to (n, height, width) float32 on the 0-255 scale with torch."""
    mode = _TORCH_INTERPOLATION[resample]
    shrinking = height < stack.shape[1] or width < stack.shape[2]
    tensor = torch.from_numpy(np.array(stack, dtype=np.float32))[:, None]  # (n, 1, H, W)

    options = {}
    if mode != "nearest-exact":
        # Antialiasing low-pass filters before shrinking, the way Pillow's resize does.
        options = {"align_corners": False, "antialias": shrinking}
    resized = F.interpolate(tensor, size=(height, width), mode=mode, **options)  # (n, 1, height, width)

    # Bicubic overshoots near edges, so clamp back to the range that the other routes produce.
    return resized[:, 0].clamp_(0, 255).numpy()


def _multiply_add(stack: np.ndarray, settings: _Settings) -> np.ndarray:
    """Apply the fused rescale and normalize to an (n, h, w) stack and repeat channels: (n, C, h, w)."""
    if stack.dtype == np.uint8:
        table = settings.lookup_table  # (C, 256)
        if settings.num_channels == 1:
            return table[0][stack][:, None]
        output = np.empty((stack.shape[0], settings.num_channels, *stack.shape[1:]), dtype=np.float32)
        for channel in range(settings.num_channels):
            output[:, channel] = table[channel][stack]
        return output

    stack = stack.astype(np.float32, copy=False)[:, None]  # (n, 1, h, w)
    return stack * settings.scale + settings.offset  # broadcasts to (n, C, h, w)


def _to_batch_feature(
    pixel_values: np.ndarray | list[np.ndarray], return_tensors: str | None, device: str | torch.device | None
) -> BatchFeature:
    if return_tensors is None:
        return BatchFeature(data={"pixel_values": list(pixel_values)})
    if isinstance(pixel_values, list):
        sizes = sorted({tuple(image.shape[1:]) for image in pixel_values})
        raise ValueError(
            f"Images have different sizes {sizes} and do_resize=False, so they cannot be stacked into one "
            f"{return_tensors!r} tensor. Set do_resize=True or pass return_tensors=None for a list."
        )
    if return_tensors == "np":
        return BatchFeature(data={"pixel_values": pixel_values})

    tensor = torch.from_numpy(pixel_values)
    if device is not None:
        tensor = tensor.to(device)
    return BatchFeature(data={"pixel_values": tensor})


__all__ = ["MnistImageProcessor"]
