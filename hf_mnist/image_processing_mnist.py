"""Image processor that turns digits in any common form into MNIST-style `pixel_values`.

`MnistImageProcessor` reduces every input to one grey channel of intensities on the 0-255 scale, brings the
digit into MNIST's form (light on black, fitted into a 20 x 20 box, centred by centre of mass in a 28 x 28
frame), resizes it to `size`, rescales and normalizes it, and repeats it to `num_channels` (3 for RGB
backbones). The output is a `BatchFeature` whose `pixel_values` have shape (batch, num_channels, height, width)
and dtype float32, plus a bool `digit_found` per image while the MNIST-style step is on.

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

MNIST-style normalization (`do_mnist_normalize`, on by default) turns each decoded image into a 28 x 28 uint8
frame, in steps that each have a parameter to turn them off:

1. Polarity (`invert`). A quadratic surface, refitted by least squares to the pixels near it, estimates the
   background, lighting gradients included; the noise std is the scaled median absolute residual. With
   "auto", an image is inverted when its residuals more than 3 noise std below the background outweigh
   those above it, that is when its strokes are darker than the paper.
2. Background and contrast (`do_correct_background`). Ink is where the 3 x 3 mean residual exceeds 6 std of
   that mean. The residual, less a noise floor of 3 std, is scaled so that the stroke level (the 0.99
   quantile of the ink residuals) becomes 255, unless it is 239 or more above the floor already. Pixels
   that are not ink or next to it become 0.
3. Crop (`do_crop_to_digit`) to the bounding box of the remaining nonzero pixels.
4. Scale (`do_scale_digit`) the box so that its longer side is `digit_box_size` (20) pixels, keeping the
   aspect ratio, with a triangle filter widened for antialiasing when shrinking.
5. Centre (`do_center_of_mass`): shift the digit by whole pixels so that its centre of mass lands within half
   a pixel of (14, 14), as in MNIST, or else centre its box.

Images whose longer side exceeds 512 pixels are shrunk to 512 first. An image in which no digit stands out
from the background (fewer than 10 stroke pixels, or strokes less than 32 grey levels from the background),
such as a blank, uniform or pure-noise image, becomes an empty black frame with `digit_found=False`. MNIST
digits pass unchanged: 4,999 of the 5,000 digits of the embedded sample come out bit for bit the same, and
the other, whose longer side is 19 pixels, is scaled to 20.

NOTE: everything that stands out from the background counts as the digit, so a photo should hold one digit
and no ruled lines or page edges. Lighting that a quadratic surface cannot follow, such as a sharp shadow,
stays in, and dense salt-and-pepper noise (5% of the pixels set to white, for one) can pass for a digit.

Preprocessing runs on whole batches in numpy and torch. The MNIST-style step runs on all the images of one
size at once, in numpy. Images of one size are stacked and resized in one
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

# MNIST geometry: digits fitted into a 20 x 20 box inside a 28 x 28 frame. In the embedded 5,000-digit sample,
# 4,999 digits have exactly 20 pixels on the longer side of their bounding box, and every digit's centre of
# mass (intensity-weighted mean of the row and column indices) rounds to pixel (14, 14).
MNIST_FRAME_SIZE = 28
MNIST_BOX_SIZE = 20
MNIST_CENTER_OF_MASS = 14.0

_INVERT_MODES = ("auto", "always", "never")

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
    "do_mnist_normalize",
    "invert",
    "do_correct_background",
    "do_crop_to_digit",
    "do_scale_digit",
    "digit_box_size",
    "do_center_of_mass",
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
    """Keyword arguments of `MnistImageProcessor`: the standard image-processor ones, `num_channels` and the
    MNIST-style normalization parameters."""

    num_channels: int | None
    do_mnist_normalize: bool | None
    invert: str | None
    do_correct_background: bool | None
    do_crop_to_digit: bool | None
    do_scale_digit: bool | None
    digit_box_size: int | None
    do_center_of_mass: bool | None


@dataclass(frozen=True)
class _MnistNormalization:
    """Validated parameters of the MNIST-style normalization step."""

    invert: str
    do_correct_background: bool
    do_crop_to_digit: bool
    do_scale_digit: bool
    digit_box_size: int
    do_center_of_mass: bool


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
    mnist_normalization: _MnistNormalization | None  # None when do_mnist_normalize is False


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
        do_mnist_normalize (`bool`, *optional*, defaults to `True`):
            Whether to bring each image into MNIST's form before resizing: a light digit on black, fitted into
            a `digit_box_size` box and centred by its centre of mass in a 28 x 28 frame. The parameters below
            turn single steps off; the module docstring describes each step. Outputs then carry `digit_found`.
        invert (`str`, *optional*, defaults to `"auto"`):
            Polarity step: "auto" inverts the images whose strokes are darker than their background,
            "always" inverts every image and "never" none.
        do_correct_background (`bool`, *optional*, defaults to `True`):
            Whether to subtract the estimated background (uneven lighting included), clear the noise around
            the digit and stretch faint strokes to full intensity. When False, the intensities stay as
            decoded (and inverted where the polarity step inverts the image).
        do_crop_to_digit (`bool`, *optional*, defaults to `True`):
            Whether to crop to the digit's bounding box. When False, the whole image is the box.
        do_scale_digit (`bool`, *optional*, defaults to `True`):
            Whether to scale the box so that its longer side is `digit_box_size` pixels, keeping the aspect
            ratio. When False, the digit keeps its size in pixels, and whatever leaves the 28 x 28 frame is cut.
        digit_box_size (`int`, *optional*, defaults to 20):
            Longer side of the scaled digit, in pixels of the 28 x 28 frame: an int from 1 to 28.
        do_center_of_mass (`bool`, *optional*, defaults to `True`):
            Whether to shift the digit by whole pixels so that its centre of mass lands on pixel (14, 14).
            When False, the box is centred in the frame instead.
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
    do_mnist_normalize = True
    invert = "auto"
    do_correct_background = True
    do_crop_to_digit = True
    do_scale_digit = True
    digit_box_size = MNIST_BOX_SIZE
    do_center_of_mass = True

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

        With `do_mnist_normalize`, the result also contains `digit_found`: one bool per image, as a tensor, an
        array or a list like `pixel_values`. It is False for an image in which nothing stands out from the
        background (blank, uniform or pure noise), whose `pixel_values` are then an empty black frame.

        NOTE: `pipeline("image-classification")` passes `digit_found` to the model, which ignores it, and
        reports only the scores, which for an empty frame can be high. Call the processor to read the flag.
        """
        options = self._resolve_call_options(dict(kwargs))
        normalization = options.settings.mnist_normalization
        # The MNIST-style step inverts dark strokes itself, unless invert is "never".
        warn_dark_on_light = normalization is None or normalization.invert == "never"
        stacks = _decode_images(images, options.input_data_format, warn_dark_on_light)

        digit_found = None
        if normalization is not None:
            stacks, digit_found = _normalize_stacks_like_mnist(stacks, normalization)
        pixel_values = _pixel_values_from_stacks(stacks, options.settings)
        return _to_batch_feature(pixel_values, digit_found, options.return_tensors, options.device)

    def preprocess_uint8(
        self, images: np.ndarray | torch.Tensor, return_tensors: str = "np", return_digit_found: bool = False
    ) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None]:
        """
        Preprocess a stacked batch of grey uint8 digits, as training data loaders hold them.

        `images` has shape (N, H, W) and dtype uint8; the result has shape (N, num_channels, height, width)
        and dtype float32, as a numpy array (`return_tensors="np"`) or a torch tensor ("pt"). The values
        equal, bit for bit, those of calling the processor on the same images as a list of mode "L" Pillow
        images, because both run the same batch code on the same stacked array.

        With `return_digit_found=True`, the result is a pair: the pixel values and the (N,) bool
        `digit_found` of `preprocess`, or None for it when `do_mnist_normalize` is False.
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
        digit_found = None
        if settings.mnist_normalization is not None:
            images, digit_found = _normalize_like_mnist(images, settings.mnist_normalization)
        pixel_values = _pixel_values_from_stack(images, settings)

        if return_tensors == "pt":
            pixel_values = torch.from_numpy(pixel_values)
            digit_found = None if digit_found is None else torch.from_numpy(digit_found)
        return (pixel_values, digit_found) if return_digit_found else pixel_values

    def to_mnist_frames(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """
        Run the first half of `preprocess`: decode `images` and bring them into MNIST's form.

        Takes what `preprocess` takes; a stacked (N, H, W) uint8 array counts as N grey images. Returns the
        (N, 28, 28) uint8 frames and the (N,) bool `digit_found`. `pixel_values_from_frames` finishes the work:
        together they give, bit for bit, the `pixel_values` of `preprocess`, so that frames can be stored at
        28 x 28 and resized for a backbone one batch at a time. Needs `do_mnist_normalize`, which makes frames
        of one size.
        """
        settings = self._resolve_call_options({}).settings
        if settings.mnist_normalization is None:
            raise ValueError(
                "to_mnist_frames needs do_mnist_normalize=True, which brings every image to a 28 x 28 frame; "
                "call the processor itself for pixel values without that step."
            )
        if isinstance(images, np.ndarray) and images.ndim == 3 and images.dtype == np.uint8:
            return _normalize_like_mnist(images, settings.mnist_normalization)
        stacks = _decode_images(images, None, warn_dark_on_light=settings.mnist_normalization.invert == "never")
        stacks, digit_found = _normalize_stacks_like_mnist(stacks, settings.mnist_normalization)
        return stacks[0], digit_found

    def pixel_values_from_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """
        Run the second half of `preprocess` on (N, 28, 28) uint8 frames of `to_mnist_frames`: resize, rescale,
        normalize and repeat channels. Returns `pixel_values`, a (N, num_channels, height, width) float32 tensor.
        """
        settings = self._resolve_call_options({}).settings
        array = _array_from(frames)
        if array.ndim != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"pixel_values_from_frames expects (N, H, W) uint8 frames from to_mnist_frames, got shape "
                f"{tuple(array.shape)} and dtype {array.dtype}."
            )
        return torch.from_numpy(_pixel_values_from_stack(array, settings))

    def unnormalize(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        """
        Turn `pixel_values` of this processor back into the grey images that they encode.

        `pixel_values` has shape (batch, num_channels, height, width). The result has shape (batch, height,
        width) and dtype uint8: it undoes rescale and normalize, rounds to the nearest grey level, clips to
        0-255 and keeps the first channel, since the others repeat it. Pixel values made from uint8 images of
        the output size, which MNIST-style frames are while `size` is 28 x 28, come back exactly.
        """
        array = _array_from(pixel_values)
        settings = self._resolve_call_options({}).settings
        if array.ndim != 4 or array.shape[1] != settings.num_channels:
            raise ValueError(
                f"unnormalize expects pixel_values of shape (batch, {settings.num_channels}, height, width), "
                f"got shape {tuple(array.shape)}."
            )

        # Inverse of the float32 multiply-add, computed in float64 so that rounding recovers uint8 levels.
        scale = float(settings.scale[0, 0, 0, 0])
        offset = float(settings.offset[0, 0, 0, 0])
        grey = (array[:, 0].astype(np.float64) - offset) / scale
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)

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
            do_mnist_normalize=values["do_mnist_normalize"],
            invert=values["invert"],
            do_correct_background=values["do_correct_background"],
            do_crop_to_digit=values["do_crop_to_digit"],
            do_scale_digit=values["do_scale_digit"],
            digit_box_size=values["digit_box_size"],
            do_center_of_mass=values["do_center_of_mass"],
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
    do_mnist_normalize: Any,
    invert: Any,
    do_correct_background: Any,
    do_crop_to_digit: Any,
    do_scale_digit: Any,
    digit_box_size: Any,
    do_center_of_mass: Any,
) -> _Settings:
    """Validate the processor parameters and precompute the fused rescale and normalize constants."""
    flags = {
        "do_resize": do_resize,
        "do_rescale": do_rescale,
        "do_normalize": do_normalize,
        "do_mnist_normalize": do_mnist_normalize,
        "do_correct_background": do_correct_background,
        "do_crop_to_digit": do_crop_to_digit,
        "do_scale_digit": do_scale_digit,
        "do_center_of_mass": do_center_of_mass,
    }
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}.")
    if invert not in _INVERT_MODES:
        raise ValueError(f"invert must be one of {list(_INVERT_MODES)}, got {invert!r}.")
    if (
        not isinstance(digit_box_size, int)
        or isinstance(digit_box_size, bool)
        or not 1 <= digit_box_size <= MNIST_FRAME_SIZE
    ):
        raise ValueError(
            f"digit_box_size must be an int from 1 to {MNIST_FRAME_SIZE} (pixels of the MNIST frame), "
            f"got {digit_box_size!r}."
        )
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
    for array in (scale, offset):
        array.flags.writeable = False

    mnist_normalization = None
    if do_mnist_normalize:
        mnist_normalization = _MnistNormalization(
            invert=invert,
            do_correct_background=do_correct_background,
            do_crop_to_digit=do_crop_to_digit,
            do_scale_digit=do_scale_digit,
            digit_box_size=digit_box_size,
            do_center_of_mass=do_center_of_mass,
        )

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
        mnist_normalization=mnist_normalization,
    )


# ---------------------------------------------------------------------------------------------------------
# Decoding: every input becomes a stack of grey images, shape (n, H, W), uint8 or float32 on the 0-255 scale
# ---------------------------------------------------------------------------------------------------------


def _decode_images(images: Any, input_data_format: str | None, warn_dark_on_light: bool) -> list[np.ndarray]:
    """
    Decode a single image, a list of images or a stacked batch into a list of (n, H, W) grey stacks.

    `warn_dark_on_light` logs a warning when dark strokes on a transparent background land on white.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list; pass at least one image.")
        stacked = _stack_grey_pil_images(images)
        if stacked is not None:
            return [stacked]
        return [_decode_single_image(image, input_data_format, warn_dark_on_light) for image in images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return [
            _grey_from_array(
                _array_from(images), input_data_format, allow_batch=True, warn_dark_on_light=warn_dark_on_light
            )
        ]
    return [_decode_single_image(images, input_data_format, warn_dark_on_light)]


def _stack_grey_pil_images(images: list | tuple) -> np.ndarray | None:
    """
    Stack same-size mode "L" Pillow images without transparency into one (n, H, W) uint8 array, or return None.

    This is what decoding them one by one and concatenating gives, with one buffer instead of n arrays: a batch
    of MNIST digits, the pipeline's usual input, spent more time in per-image arrays than in Pillow.
    """
    first = images[0]
    if not isinstance(first, Image.Image):
        return None
    size = first.size
    for image in images:
        if (
            not isinstance(image, Image.Image)
            or image.mode != "L"
            or image.size != size
            or "transparency" in image.info
        ):
            return None
    width, height = size
    return np.frombuffer(b"".join(image.tobytes() for image in images), dtype=np.uint8).reshape(-1, height, width)


def _decode_single_image(image: Any, input_data_format: str | None, warn_dark_on_light: bool) -> np.ndarray:
    """Decode one image of any accepted kind into a (1, H, W) grey stack."""
    if isinstance(image, Image.Image):
        return _grey_from_pil(image, warn_dark_on_light)[None]
    if isinstance(image, (str, os.PathLike)):
        return _grey_from_pil(_open_image_file(image), warn_dark_on_light)[None]
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return _grey_from_array(
            _array_from(image), input_data_format, allow_batch=False, warn_dark_on_light=warn_dark_on_light
        )
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


def _grey_from_pil(image: Image.Image, warn_dark_on_light: bool) -> np.ndarray:
    """Decode a Pillow image into an (H, W) grey image, uint8 or float32 on the 0-255 scale."""
    mode = image.mode
    if mode in _PIL_ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        grey = _pil_bytes(rgba.convert("L"))  # Pillow's luminance ignores alpha
        alpha = _pil_bytes(rgba.getchannel("A"))
        return _flatten_alpha(grey[None], alpha[None], warn_dark_on_light)[0]
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


def _grey_from_array(
    array: np.ndarray, input_data_format: str | None, allow_batch: bool, warn_dark_on_light: bool
) -> np.ndarray:
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
    return _flatten_alpha(grey, pixels[..., 3], warn_dark_on_light)


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


def _flatten_alpha(grey: np.ndarray, alpha: np.ndarray, warn_dark_on_light: bool) -> np.ndarray:
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

    if warn_dark_on_light and np.any(background == 255):
        logger.warning_once(
            "Flattened an image with dark strokes on a transparent background onto white. The digit is now "
            "dark on light, while MNIST digits are light on black; invert such images if the model expects "
            "MNIST polarity, or set do_mnist_normalize=True with invert='auto'."
        )
    # Integers up to 255 * 255 are exact in float32, so one rounding happens, at the division.
    background = background[:, None, None]
    return (grey * alpha + background * (255 - alpha)) / 255


# ---------------------------------------------------------------------------------------------------------
# MNIST-style normalization: polarity, background and contrast, crop, scale, centre of mass
# ---------------------------------------------------------------------------------------------------------

# Images are normalized with their longer side shrunk to at most this many pixels, which bounds the cost of the
# background fit. A digit that spans a tenth of a 4,000-pixel photo still spans 51 pixels after shrinking.
_MAX_WORKING_SIDE = 512

# Pixels per normalization chunk, which bounds the memory of its temporary float32 arrays to 16 MiB each.
_CHUNK_PIXELS = 1 << 22

# The median absolute deviation of normal noise times this factor is its standard deviation.
_MAD_TO_STD = 1.4826

# The background fit reads at most about this many pixels per image, on a regular grid.
_FIT_PIXELS = 4096

# Refits of the background surface, and the distance from it, in noise standard deviations, within which a
# pixel counts as background: for the fit, for the polarity vote and as the noise floor that is cleared.
_BACKGROUND_FITS = 3
_BACKGROUND_SIGMAS = 3.0

# A pixel is ink when the 3 x 3 mean of its residual exceeds this many standard deviations of that mean. Normal
# noise exceeds 6 standard deviations with a probability of about 1e-9 per pixel.
_INK_SIGMAS = 6.0

# An image contains a digit only with at least this many stroke pixels (at working size, see `_find_ink`) and a
# stroke level at least this many grey levels above the background.
_MIN_STROKE_PIXELS = 10
_STROKE_PIXEL_FRACTION = 0.25
_MIN_STROKE_CONTRAST = 32.0

# The stroke level is this upper quantile of the residuals of the ink pixels. A stroke level of
# _FULL_STROKE_LEVEL or more above the noise floor is not stretched, so MNIST digits keep their intensities.
# In the embedded sample, this quantile is 240 or more for every digit, while the 0.9 quantile drops to 188.
_STROKE_QUANTILE = 0.99
_FULL_STROKE_LEVEL = 239.0


def _normalize_stacks_like_mnist(
    stacks: list[np.ndarray], normalization: _MnistNormalization
) -> tuple[list[np.ndarray], np.ndarray]:
    """
    Normalize grey stacks of any sizes into one (N, 28, 28) uint8 stack of MNIST frames, in input order.

    Returns the stack (as a one-element list, the form that `_pixel_values_from_stacks` takes) and the (N,)
    bool `digit_found` flags.
    """
    groups, count = _group_by_size(stacks)
    if len(groups) == 1:  # one size, as in a batch of digits
        frames, digit_found = _normalize_like_mnist(groups[0][1], normalization)
        return [frames], digit_found

    frames = np.empty((count, MNIST_FRAME_SIZE, MNIST_FRAME_SIZE), dtype=np.uint8)
    digit_found = np.empty(count, dtype=bool)
    for positions, stack in groups:
        frames[positions], digit_found[positions] = _normalize_like_mnist(stack, normalization)
    return [frames], digit_found


def _group_by_size(stacks: list[np.ndarray]) -> tuple[list[tuple[list[int], np.ndarray]], int]:
    """
    Group (n, H, W) stacks by image size, so that each size is processed in one batched call.

    Returns one (positions in input order, concatenated stack) pair per size, and the total image count.
    """
    if len({stack.shape[1:] for stack in stacks}) == 1:
        stack = stacks[0] if len(stacks) == 1 else np.concatenate(stacks)
        return [(list(range(len(stack))), stack)], len(stack)

    members: dict[tuple[int, int], tuple[list[int], list[np.ndarray]]] = {}
    position = 0
    for stack in stacks:
        positions, group = members.setdefault(stack.shape[1:], ([], []))
        positions.extend(range(position, position + stack.shape[0]))
        group.append(stack)
        position += stack.shape[0]
    groups = [
        (positions, group[0] if len(group) == 1 else np.concatenate(group)) for positions, group in members.values()
    ]
    return groups, position


def _normalize_like_mnist(stack: np.ndarray, normalization: _MnistNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Normalize an (n, H, W) grey stack on the 0-255 scale into (n, 28, 28) uint8 frames and (n,) flags."""
    height, width = stack.shape[1:]
    longer_side = max(height, width)
    if longer_side > _MAX_WORKING_SIDE:
        factor = _MAX_WORKING_SIDE / longer_side
        working_size = (max(1, round(height * factor)), max(1, round(width * factor)))
        stack = _resize(stack, *working_size, PILImageResampling.BILINEAR)

    # Frames already in MNIST's form, as most MNIST digits are, pass through. The full step would return them
    # unchanged, and checking that costs a fraction of running it.
    unchanged = _unchanged_by_step(stack, normalization)
    if not unchanged.any():
        return _normalize_in_chunks(stack, normalization)
    frames = stack.copy()
    digit_found = np.ones(len(stack), dtype=bool)
    rest = np.flatnonzero(~unchanged)
    if rest.size:
        frames[rest], digit_found[rest] = _normalize_in_chunks(stack[rest], normalization)
    return frames, digit_found


def _normalize_in_chunks(stack: np.ndarray, normalization: _MnistNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Run the full MNIST-style step over an (n, H, W) stack, in chunks that keep the working arrays small."""
    chunk = max(1, _CHUNK_PIXELS // (stack.shape[1] * stack.shape[2]))
    results = [_normalize_chunk(stack[start : start + chunk], normalization) for start in range(0, len(stack), chunk)]
    if len(results) == 1:
        return results[0]
    return np.concatenate([frames for frames, _ in results]), np.concatenate([found for _, found in results])


def _unchanged_by_step(stack: np.ndarray, normalization: _MnistNormalization) -> np.ndarray:
    """
    Return, for an (n, H, W) stack, which images the MNIST-style step returns unchanged with `digit_found`: (n,).

    `_normalize_chunk` meets each condition below for such an image, so an image that meets them all is a fixed
    point of the step. An image that fails one merely takes the full step. The conditions: a 28 x 28
    uint8 image, more than half of whose pixels are 0 (background 0, noise std 0, no inversion under "auto"); a
    stroke level of `_FULL_STROKE_LEVEL` or more (no stretch) and enough stroke pixels; a box whose longer side
    needs no scaling; and a whole-pixel placement of (0, 0).

    The sums run in torch, in float32, which is exact for these integers (below 2**24). Numpy's reductions over
    the short axes of 28 x 28 images took several times longer, and its BLAS threads, which busy-wait after a
    matrix product, slowed the model's forward pass that followed.
    """
    count = stack.shape[0]
    unchanged = np.zeros(count, dtype=bool)
    size = MNIST_FRAME_SIZE
    if (
        stack.dtype != np.uint8
        or stack.shape[1:] != (size, size)
        or not normalization.do_correct_background
        or normalization.invert == "always"
    ):
        return unchanged

    nonzero_counts = np.count_nonzero(stack.reshape(count, -1), axis=1)
    candidates = np.flatnonzero(nonzero_counts < size * size - size * size // 2)
    if not candidates.size:
        return unchanged
    pixels = torch.from_numpy(stack[candidates]).float()  # (m, 28, 28)

    # With a noise std of 0, ink is where the 3 x 3 sum is positive. The stroke level is a nearest-rank quantile
    # of the ink pixels, so it reaches the full level when as many pixels as its rank do (each of them is ink).
    # Requiring the largest possible rank spares counting the ink. A 3 x 3 mean of at least a quarter of 255 is
    # at least a quarter of any stroke level, so counting those pixels undercounts the stroke pixels.
    window_sums = (_BOX_3X3 @ pixels @ _BOX_3X3).flatten(1)
    full_level = (pixels >= _FULL_STROKE_LEVEL).flatten(1).sum(dim=1).numpy() >= _MAX_STROKE_RANK
    strong = (window_sums >= 9 * _STROKE_PIXEL_FRACTION * 255).sum(dim=1).numpy() >= _MIN_STROKE_PIXELS
    with_ink = np.flatnonzero(full_level & strong)  # so no mass below is 0
    candidates, pixels = candidates[with_ink], pixels[torch.from_numpy(with_ink)]
    keep = np.ones(len(candidates), dtype=bool)

    # After background correction the digit is the nonzero pixels. Their box must need no scaling, and placing
    # it in the frame must not move it.
    row_mass = pixels.sum(dim=2).double().numpy()  # (m, 28)
    col_mass = pixels.sum(dim=1).double().numpy()
    if normalization.do_crop_to_digit:
        top, box_height = _extent(row_mass > 0)
        left, box_width = _extent(col_mass > 0)
    else:
        top = left = np.zeros(len(candidates), dtype=np.int64)
        box_height = box_width = np.full(len(candidates), size)
    if normalization.do_scale_digit:
        keep &= normalization.digit_box_size / np.maximum(box_height, box_width) == 1
    if normalization.do_center_of_mass:
        frame_top, frame_left = _center_of_mass_offsets(row_mass, col_mass)
    else:
        frame_top, frame_left = _centered_box_offsets(box_height, box_width)
        frame_top, frame_left = frame_top - top, frame_left - left
    keep &= (frame_top == 0) & (frame_left == 0)

    unchanged[candidates[keep]] = True
    return unchanged


# Rank of the stroke level among the ink pixels of a 28 x 28 image when all 784 are ink, the most it can be.
_MAX_STROKE_RANK = math.ceil((1 - _STROKE_QUANTILE) * MNIST_FRAME_SIZE**2)

# Band matrix whose product with an image sums each pixel with its two neighbours along one axis, edge pixels
# counting twice, as `_sum_3_along` does: `_BOX_3X3 @ image @ _BOX_3X3` is the 3 x 3 sum of `_box_mean_3x3`.
_BOX_3X3 = torch.from_numpy(sum(np.eye(MNIST_FRAME_SIZE, k=offset, dtype=np.float32) for offset in (-1, 0, 1)))
_BOX_3X3[0, 0] = _BOX_3X3[-1, -1] = 2


def _extent(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the first index and the length of the span of True values of each row of an (n, L) bool array."""
    first = occupied.argmax(axis=1)
    end = occupied.shape[1] - occupied[:, ::-1].argmax(axis=1)  # exclusive
    return first, end - first


def _normalize_chunk(stack: np.ndarray, normalization: _MnistNormalization) -> tuple[np.ndarray, np.ndarray]:
    pixels = stack.astype(np.float32)  # (n, H, W)
    count = pixels.shape[0]

    # Polarity: after the background fit, strokes are the residuals far from zero, on the side with more mass.
    residual, noise = _fit_background(pixels)
    inverted = _choose_inversion(residual, noise, normalization.invert)
    residual = np.where(inverted[:, None, None], -residual, residual)  # strokes now positive

    ink, stroke_level, stroke_pixels = _find_ink(residual, noise)
    near_ink = _dilate_3x3(ink)
    if normalization.do_correct_background:
        digit = _correct_background(residual, noise, stroke_level, near_ink)
        region = digit > 0
    else:
        digit = np.where(inverted[:, None, None], 255 - pixels, pixels)
        region = near_ink
    digit_found = (
        (stroke_pixels >= _MIN_STROKE_PIXELS) & (stroke_level >= _MIN_STROKE_CONTRAST) & region.any(axis=(1, 2))
    )

    # Images without a digit become empty frames; the others are cropped, scaled and placed.
    frames = np.zeros((count, MNIST_FRAME_SIZE, MNIST_FRAME_SIZE), dtype=np.uint8)
    found = np.flatnonzero(digit_found)
    if found.size:
        digit, region = digit[found], region[found]
        if normalization.do_crop_to_digit:
            boxes = _bounding_boxes(region)
        else:
            height, width = region.shape[1:]
            boxes = tuple(np.full(found.size, value) for value in (0, height, 0, width))
        frames[found] = _place_in_frame(digit, boxes, normalization)
    return frames, digit_found


def _fit_background(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Fit a smooth background to each image of an (n, H, W) stack: returns the residual and the noise std (n,).

    The background is a quadratic surface in the pixel coordinates, which follows a lighting gradient or the
    vignetting of a photo. It starts as the median and is refitted by least squares to the pixels within
    `_BACKGROUND_SIGMAS` noise standard deviations of it, so strokes, far off to one side, drop out of the fit.
    The noise std is the scaled median absolute residual. Images in which more than half of the pixels equal
    the median (MNIST digits, clean drawings) keep that constant background and a noise std of 0, which is what
    the refits converge to for them.
    """
    median, noise = _median_and_noise(pixels.reshape(pixels.shape[0], -1))
    residual = pixels - median[:, None, None]

    uneven = np.flatnonzero(noise > 0)
    if uneven.size:
        surface, noise[uneven] = _fit_quadratic_surface(pixels[uneven], median[uneven], noise[uneven])
        residual[uneven] = pixels[uneven] - surface
    return residual, noise


def _fit_quadratic_surface(pixels: np.ndarray, median: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Refit (m, H, W) images, starting from their median and noise std, to quadratic surfaces.

    Returns the surfaces (m, H, W) float32 and the noise std (m,) around them. The fit reads about
    `_FIT_PIXELS` pixels per image, on a regular grid, since 6 coefficients need no more.
    """
    count, height, width = pixels.shape
    stride = max(1, math.ceil(math.sqrt(height * width / _FIT_PIXELS)))
    row_coordinates = np.linspace(-1, 1, height)
    col_coordinates = np.linspace(-1, 1, width)
    grid_y, grid_x = np.meshgrid(row_coordinates[::stride], col_coordinates[::stride], indexing="ij")
    design = _quadratic_terms(grid_x.ravel(), grid_y.ravel())  # (P, 6)
    products = (design[:, :, None] * design[:, None, :]).reshape(len(design), 36)
    # A tiny ridge keeps the system solvable when the background pixels do not pin down every coefficient.
    ridge = 1e-9 * len(design) * np.eye(6)

    sample = pixels[:, ::stride, ::stride].reshape(count, -1).astype(np.float64)  # (m, P)
    residual = sample - median[:, None]
    for _ in range(_BACKGROUND_FITS):
        weights = (np.abs(residual) <= _BACKGROUND_SIGMAS * noise[:, None]).astype(np.float64)
        # einsum rather than BLAS: these thin products are quick in one thread, and BLAS threads that
        # busy-wait between calls took several times the CPU time (numpy 2.4 with OpenBLAS 0.3.31, 2 cores).
        normal_matrix = np.einsum("mp,pk->mk", weights, products).reshape(count, 6, 6) + ridge
        moments = np.einsum("mp,pk->mk", weights * sample, design)
        coefficients = np.linalg.solve(normal_matrix, moments[..., None])[..., 0]  # (m, 6)
        residual = sample - np.einsum("mk,pk->mp", coefficients, design)
        noise = (_MAD_TO_STD * _row_median(np.abs(residual))).astype(np.float32)

    # Evaluate the surfaces at every pixel from the separable terms: (m, H, W).
    terms = _quadratic_terms(col_coordinates[None, :], row_coordinates[:, None])  # (H, W, 6)
    surface = np.einsum("hwk,mk->mhw", terms, coefficients)
    return surface.astype(np.float32), noise


def _quadratic_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stack the terms 1, x, y, x^2, xy, y^2 of a quadratic surface along a new last axis."""
    x, y = np.broadcast_arrays(x, y)
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


def _median_and_noise(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Return the upper median (n,) of each row of an (n, m) array and the scaled median absolute deviation (n,).

    Rows in which more than half of the values equal the row minimum or maximum, such as MNIST digits on
    black, have that value as median and a deviation of 0. They skip `np.partition`, which slows down on
    rows of repeated values.
    """
    middle = flat.shape[1] // 2
    median = np.empty(flat.shape[0], dtype=flat.dtype)
    noise = np.zeros(flat.shape[0], dtype=np.float32)
    unsettled = np.ones(flat.shape[0], dtype=bool)
    for extreme in (flat.min(axis=1), flat.max(axis=1)):
        settled = unsettled & ((flat == extreme[:, None]).sum(axis=1) > middle)
        median[settled] = extreme[settled]
        unsettled &= ~settled

    rows = np.flatnonzero(unsettled)
    if rows.size:
        median[rows] = _row_median(flat[rows])
        noise[rows] = _MAD_TO_STD * _row_median(np.abs(flat[rows] - median[rows, None]))
    return median, noise


def _row_median(rows: np.ndarray) -> np.ndarray:
    """Return the upper median of each row of an (n, m) array, found by partitioning rather than sorting."""
    middle = rows.shape[1] // 2
    return np.partition(rows, middle, axis=1)[:, middle]


def _choose_inversion(residual: np.ndarray, noise: np.ndarray, invert: str) -> np.ndarray:
    """Decide per image whether to invert: (n,) bool. "auto" inverts where dark residuals outweigh light ones."""
    count = residual.shape[0]
    if invert != "auto":
        return np.full(count, invert == "always")
    # The light mass beyond the floor minus the dark mass beyond it is the sum of r - clip(r, -floor, floor).
    floor = (_BACKGROUND_SIGMAS * noise)[:, None, None]
    beyond_floor = residual - np.clip(residual, -floor, floor)
    return beyond_floor.sum(axis=(1, 2)) < 0


def _find_ink(residual: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Find the ink of residuals whose strokes are positive: returns the ink mask (n, H, W), the stroke level (n,)
    and the stroke pixel count (n,) of each image.

    A pixel is ink when the 3 x 3 mean of the residual around it exceeds `_INK_SIGMAS` standard deviations of
    that mean, which averages noise down but keeps strokes. The stroke level is the `_STROKE_QUANTILE` upper
    quantile of the residuals of the ink pixels, or 0 without ink. Stroke pixels are those whose 3 x 3 mean
    reaches `_STROKE_PIXEL_FRACTION` of the stroke level: a line 1 pixel wide reaches a third of it, a lone
    bright pixel a ninth.
    """
    count = residual.shape[0]
    smoothed = _box_mean_3x3(residual)
    smoothed_noise = np.zeros(count, dtype=np.float32)
    uneven = np.flatnonzero(noise > 0)
    if uneven.size:
        smoothed_noise[uneven] = _MAD_TO_STD * _row_median(np.abs(smoothed[uneven].reshape(uneven.size, -1)))
    ink = smoothed > (_INK_SIGMAS * smoothed_noise)[:, None, None]
    stroke_level = _upper_quantile(residual, ink, _STROKE_QUANTILE)
    stroke_pixels = (smoothed >= (_STROKE_PIXEL_FRACTION * stroke_level)[:, None, None]) & ink
    return ink, stroke_level, stroke_pixels.sum(axis=(1, 2))


def _upper_quantile(values: np.ndarray, mask: np.ndarray, quantile: float) -> np.ndarray:
    """Return, per image, the nearest-rank `quantile` of the `values` where `mask` is True, or 0 where none is."""
    count = values.shape[0]
    masked = np.where(mask, values, -np.inf).reshape(count, -1)
    members = mask.reshape(count, -1).sum(axis=1)
    ranks = np.maximum(np.ceil((1 - quantile) * members).astype(np.int64), 1)  # 1 is the largest value
    depth = int(ranks.max())
    largest = -np.sort(np.partition(-masked, depth - 1, axis=1)[:, :depth], axis=1)  # (n, depth), descending
    level = largest[np.arange(count), ranks - 1]
    return np.where(members > 0, level, 0).astype(np.float32)


def _correct_background(
    residual: np.ndarray, noise: np.ndarray, stroke_level: np.ndarray, near_ink: np.ndarray
) -> np.ndarray:
    """
    Map residuals to intensities on the 0-255 scale: the noise floor to 0 and the stroke level to 255.

    A stroke level of `_FULL_STROKE_LEVEL` or more above the floor is left unstretched. Pixels that are not in
    `near_ink` become 0, which clears noise and smudges away from the digit.
    """
    floor = _BACKGROUND_SIGMAS * noise  # (n,)
    span = stroke_level - floor
    gain = np.where(span >= _FULL_STROKE_LEVEL, 1.0, 255.0 / np.maximum(span, 1.0)).astype(np.float32)
    digit = np.clip((residual - floor[:, None, None]) * gain[:, None, None], 0, 255)
    return np.where(near_ink, digit, np.float32(0))


def _box_mean_3x3(images: np.ndarray) -> np.ndarray:
    """Mean over the 3 x 3 neighbourhood of each pixel of an (n, H, W) stack, with edge pixels repeated."""
    return _sum_3_along(_sum_3_along(images, axis=1), axis=2) / np.float32(9)


def _sum_3_along(images: np.ndarray, axis: int) -> np.ndarray:
    """Sum each pixel with its two neighbours along `axis` of an (n, H, W) stack, edge pixels counting twice."""
    total = images.copy()
    source, target = [slice(None)] * 3, [slice(None)] * 3
    for shift_from, shift_to in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
        source[axis], target[axis] = shift_from, shift_to
        total[tuple(target)] += images[tuple(source)]
    for edge in (0, -1):
        source[axis] = edge
        total[tuple(source)] += images[tuple(source)]
    return total


def _dilate_3x3(mask: np.ndarray) -> np.ndarray:
    """Grow the True pixels of an (n, H, W) bool stack by one pixel in every direction, diagonals included."""
    grown = mask.copy()
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    rows_grown = grown.copy()
    grown[:, :, 1:] |= rows_grown[:, :, :-1]
    grown[:, :, :-1] |= rows_grown[:, :, 1:]
    return grown


def _bounding_boxes(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the (top, height, left, width) arrays of the True pixels of each non-empty (H, W) mask."""
    top, height = _extent(region.any(axis=2))
    left, width = _extent(region.any(axis=1))
    return top, height, left, width


def _place_in_frame(digit: np.ndarray, boxes: tuple[np.ndarray, ...], normalization: _MnistNormalization) -> np.ndarray:
    """Crop each image to its box, scale it, and place it in a 28 x 28 frame: (n, 28, 28) uint8."""
    top, box_height, left, box_width = boxes
    if normalization.do_scale_digit:
        scale = normalization.digit_box_size / np.maximum(box_height, box_width)
    else:
        scale = np.ones(len(top))

    # Boxes at scale 1, such as those of MNIST digits, move by whole pixels without resampling. The others
    # are resampled, which at scale 1 would copy each pixel exactly too.
    frames = np.empty((len(top), MNIST_FRAME_SIZE, MNIST_FRAME_SIZE), dtype=np.uint8)
    unscaled = scale == 1
    if unscaled.any():
        subset_boxes = tuple(value[unscaled] for value in boxes)
        frames[unscaled] = _move_unscaled(digit[unscaled], subset_boxes, normalization.do_center_of_mass)
    if not unscaled.all():
        subset_boxes = tuple(value[~unscaled] for value in boxes)
        frames[~unscaled] = _resample_scaled(
            digit[~unscaled], subset_boxes, scale[~unscaled], normalization.do_center_of_mass
        )
    return frames


def _move_unscaled(digit: np.ndarray, boxes: tuple[np.ndarray, ...], center_of_mass: bool) -> np.ndarray:
    """Place the boxes of `digit` in 28 x 28 frames at their own size: (n, 28, 28) uint8."""
    top, box_height, left, box_width = boxes
    rows = np.arange(digit.shape[1])[None, :, None]
    cols = np.arange(digit.shape[2])[None, None, :]
    rows_in_box = (rows >= top[:, None, None]) & (rows < (top + box_height)[:, None, None])  # (n, H, 1)
    cols_in_box = (cols >= left[:, None, None]) & (cols < (left + box_width)[:, None, None])  # (n, 1, W)
    in_box = rows_in_box & cols_in_box
    boxed = np.where(in_box, digit, np.float32(0))

    # The canvas is the whole image. Its centre of mass places it directly, but a centred box lies at
    # (top, left) in it, not at its corner.
    frame_top, frame_left = _frame_offsets(boxed, box_height, box_width, center_of_mass)
    if not center_of_mass:
        frame_top, frame_left = frame_top - top, frame_left - left
    frames = _paste(boxed, frame_top, frame_left)
    return np.clip(np.floor(frames + 0.5), 0, 255).astype(np.uint8)


def _resample_scaled(
    digit: np.ndarray, boxes: tuple[np.ndarray, ...], scale: np.ndarray, center_of_mass: bool
) -> np.ndarray:
    """Scale the boxes of `digit` by `scale` and place them in 28 x 28 frames: (n, 28, 28) uint8."""
    top, box_height, left, box_width = boxes
    scaled_height, scaled_width = box_height * scale, box_width * scale

    # Slicing to the window that contains every box keeps the matrix products below small. Over whole photos,
    # multi-threaded BLAS made them cost several times more CPU time (numpy 2.4 with OpenBLAS 0.3.31, 2 cores).
    window_top, window_left = int(top.min()), int(left.min())
    window = digit[:, window_top : int((top + box_height).max()), window_left : int((left + box_width).max())]
    top, left = top - window_top, left - window_left

    # Crop and resample as two batched matrix products, into a square canvas that fits every scaled box.
    extent = int(np.ceil(max(scaled_height.max(), scaled_width.max()) - 1e-6))
    row_weights = _resampling_weights(top, box_height, scale, extent, window.shape[1])  # (n, extent, h)
    col_weights = _resampling_weights(left, box_width, scale, extent, window.shape[2])  # (n, extent, w)
    scaled = row_weights @ window @ col_weights.transpose(0, 2, 1)  # (n, extent, extent)

    frames = _paste(scaled, *_frame_offsets(scaled, scaled_height, scaled_width, center_of_mass))
    return np.clip(np.floor(frames + 0.5), 0, 255).astype(np.uint8)


def _frame_offsets(
    canvases: np.ndarray, box_height: np.ndarray, box_width: np.ndarray, center_of_mass: bool
) -> tuple[np.ndarray, np.ndarray]:
    """
    Return whole-pixel frame positions (top, left), (n,) each, for the corners of (n, h, w) canvases.

    With `center_of_mass`, each canvas's centre of mass lands within half a pixel of (14, 14). Otherwise a
    box of `box_height` x `box_width` pixels at the canvas corner is centred, rounding up and to the left.
    """
    if not center_of_mass:
        return _centered_box_offsets(box_height, box_width)
    return _center_of_mass_offsets(canvases.sum(axis=2, dtype=np.float64), canvases.sum(axis=1, dtype=np.float64))


def _centered_box_offsets(box_height: np.ndarray, box_width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel (top, left) that centre boxes in the frame, rounding up and to the left: (n,) each."""
    top = np.floor((MNIST_FRAME_SIZE - box_height) / 2)
    left = np.floor((MNIST_FRAME_SIZE - box_width) / 2)
    return top.astype(np.int64), left.astype(np.int64)


def _center_of_mass_offsets(row_mass: np.ndarray, col_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel (top, left) that bring centres of mass near (14, 14), from float64 row (n, h) and column masses."""
    mass = row_mass.sum(axis=1)
    row_center = row_mass @ np.arange(row_mass.shape[1], dtype=np.float64) / mass
    col_center = col_mass @ np.arange(col_mass.shape[1], dtype=np.float64) / mass
    top = np.floor(MNIST_CENTER_OF_MASS + 0.5 - row_center)
    left = np.floor(MNIST_CENTER_OF_MASS + 0.5 - col_center)
    return top.astype(np.int64), left.astype(np.int64)


def _resampling_weights(
    start: np.ndarray, length: np.ndarray, scale: np.ndarray, extent: int, source_size: int
) -> np.ndarray:
    """
    Return weights (n, extent, source_size) that crop [start, start + length) along one axis and scale it.

    Output pixel k samples the source at start + (k + 0.5) / scale - 0.5 with a triangle (bilinear) filter whose
    radius grows to 1 / scale when shrinking, which antialiases as Pillow's resize does. Weights are normalized
    over the source pixels inside the crop, and output pixels past the scaled length get none. At scale 1, each
    output pixel copies one source pixel exactly.
    """
    start, length, scale = (np.asarray(value, dtype=np.float32)[:, None, None] for value in (start, length, scale))
    output_index = np.arange(extent, dtype=np.float32)[None, :, None]
    source_index = np.arange(source_size, dtype=np.float32)[None, None, :]

    # In place where possible, since a large batch makes these arrays large: (n, extent, source_size).
    position = start + (output_index + 0.5) / scale - 0.5  # (n, extent, 1)
    weights = np.abs(source_index - position)  # (n, extent, source_size)
    weights *= np.minimum(scale, 1)  # distance in filter radii
    np.subtract(1, weights, out=weights)
    np.maximum(weights, 0, out=weights)
    weights *= (source_index >= start) & (source_index < start + length)

    totals = weights.sum(axis=2, keepdims=True)
    used = (output_index < np.ceil(length * scale - 1e-4)) & (totals > 0)
    np.divide(weights, np.where(used, totals, 1), out=weights)
    weights *= used
    return weights


def _paste(canvases: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Place each (h, w) canvas with its corner at (top, left) of a 28 x 28 frame, and cut what falls out."""
    count, height, width = canvases.shape
    size = MNIST_FRAME_SIZE

    # Pad the canvases with zeros just enough that every frame is a window of the padded stack: the frame
    # placed at (top, left) starts at canvas row -top and column -left.
    pad_top, pad_left = max(0, int(top.max())), max(0, int(left.max()))
    pad_bottom = max(0, int((size - top).max()) - height)
    pad_right = max(0, int((size - left).max()) - width)
    padded = np.zeros((count, pad_top + height + pad_bottom, pad_left + width + pad_right), dtype=canvases.dtype)
    padded[:, pad_top : pad_top + height, pad_left : pad_left + width] = canvases
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    return windows[np.arange(count), pad_top - top, pad_left - left]


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

    groups, position = _group_by_size(stacks)
    processed = [(positions, _pixel_values_from_stack(stack, settings)) for positions, stack in groups]
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
    # One float32 multiply and one add per element, in separate passes, so the rounding is the same for every
    # input type. For uint8 this was six times as fast as indexing a 256-entry lookup table.
    stack = stack.astype(np.float32, copy=False)[:, None]  # (n, 1, h, w)
    return stack * settings.scale + settings.offset  # broadcasts to (n, C, h, w)


def _to_batch_feature(
    pixel_values: np.ndarray | list[np.ndarray],
    digit_found: np.ndarray | None,
    return_tensors: str | None,
    device: str | torch.device | None,
) -> BatchFeature:
    """Wrap the outputs in the form that `return_tensors` selects, leaving `digit_found` out when it is None."""
    data = {}
    if return_tensors is None:
        data["pixel_values"] = list(pixel_values)
        if digit_found is not None:
            data["digit_found"] = digit_found.tolist()
        return BatchFeature(data=data)
    if isinstance(pixel_values, list):
        sizes = sorted({tuple(image.shape[1:]) for image in pixel_values})
        raise ValueError(
            f"Images have different sizes {sizes} and do_resize=False, so they cannot be stacked into one "
            f"{return_tensors!r} tensor. Set do_resize=True or pass return_tensors=None for a list."
        )
    if return_tensors == "np":
        data["pixel_values"] = pixel_values
        if digit_found is not None:
            data["digit_found"] = digit_found
        return BatchFeature(data=data)

    data["pixel_values"] = torch.from_numpy(pixel_values)
    if digit_found is not None:
        data["digit_found"] = torch.from_numpy(digit_found)
    if device is not None:
        data = {name: tensor.to(device) for name, tensor in data.items()}
    return BatchFeature(data=data)


__all__ = ["MnistImageProcessor"]
