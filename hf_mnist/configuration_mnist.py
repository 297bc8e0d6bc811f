"""Configuration of the hf-mnist digit classifier.

This file is shipped to the Hub next to the weights and loaded with `trust_remote_code=True`, so it imports
only the standard library, transformers and, to check a backbone name, timm when it is installed.
"""

import copy
import difflib
import re

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

DIGIT_LABELS = [str(digit) for digit in range(10)]

# Activations the dense head accepts: names from `transformers.activations.ACT2FN` that need no arguments.
SUPPORTED_ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "mish")

BACKBONE_FREEZE_MODES = ("none", "all", "all_but_last_stage")

# `custom_pipelines` entry of every saved config: `pipeline("image-classification", trust_remote_code=True)` then
# builds the batched pipeline of pipeline_mnist.py, which modeling_mnist.py imports so that it is saved with it.
CUSTOM_PIPELINES = {
    "image-classification": {
        "impl": "pipeline_mnist.MnistImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "type": "image",
    }
}


@strict
class MnistConfig(PreTrainedConfig):
    r"""
    Configuration of [`MnistForImageClassification`].

    The default is the classic MNIST network: the 28×28 image flattened to 784 values, then dense layers of
    256 and 64 units with ReLU, then 10 logits. Setting `backbone` puts a timm model in front of the same
    dense head, which then reads the backbone's pooled features.

    Args:
        hidden_sizes (`list[int]`, defaults to `[256, 64]`):
            Width of each hidden dense layer, in order. Empty only with a backbone, where it means a single
            linear layer on the pooled features.
        hidden_act (`str`, defaults to `"relu"`):
            Activation after each hidden layer, one of `SUPPORTED_ACTIVATIONS`.
        dropout (`float`, defaults to 0.0):
            Dropout probability after each hidden activation, in [0, 1).
        image_size (`int`, defaults to 28):
            Height and width in pixels of the `pixel_values` the model reads: 28 for the dense network, the
            input size of the backbone otherwise (the image processor resizes the 28×28 digits to it).
        num_channels (`int`, defaults to 1):
            Channels of `pixel_values` the network reads: 1 (grey) or 3 (RGB).
        backbone (`str`, *optional*):
            Name of a timm architecture, optionally with a pretrained tag, for example `"resnet18"` or
            `"resnet18.a1_in1k"`. `None` keeps the dense network alone.
        backbone_pretrained (`bool`, defaults to `False`):
            Whether the backbone started training from pretrained weights rather than a random init. The
            model never fetches these weights itself: the training code loads them into a new model, and a
            saved model carries them in its own weights file, so loading it needs no download.
        backbone_weights_sha256 (`str`, *optional*):
            SHA-256 of the local file the pretrained backbone weights came from. It is `None` when they are
            the weights timm publishes for `backbone`, or when there are none. The file's path is never
            recorded, so that a published config reveals no local folder or user name.
        backbone_freeze (`str`, defaults to `"none"`):
            Which backbone parameters stay fixed in training: `"none"`, `"all"` or `"all_but_last_stage"`.
            The last stage is every backbone layer registered after the second-deepest feature level that
            timm's `feature_info` lists: the layers that produce the deepest features, and the final norms
            or head convolutions after them.
    """

    model_type = "hf_mnist"

    hidden_sizes: list[int] | tuple[int, ...] = (256, 64)
    hidden_act: str = "relu"
    dropout: float | int = 0.0
    image_size: int = 28
    num_channels: int = 1
    backbone: str | None = None
    backbone_pretrained: bool = False
    backbone_weights_sha256: str | None = None
    backbone_freeze: str = "none"

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        if self.id2label is None:
            self.id2label = dict(enumerate(DIGIT_LABELS))
        if self.label2id is None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        super().__post_init__(**kwargs)
        if getattr(self, "custom_pipelines", None) is None:
            self.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        self._check_values()

    def _check_values(self):
        # Raised here rather than in `validate_*` methods, which `@strict` would wrap in an exception that is
        # not a `ValueError`.
        if not self.hidden_sizes and self.backbone is None:
            raise ValueError(
                "MnistConfig.hidden_sizes=[] is invalid without a backbone: give at least one positive layer "
                "width, for example hidden_sizes=[256, 64]."
            )
        bad_sizes = [size for size in self.hidden_sizes if isinstance(size, bool) or size <= 0]
        if bad_sizes:
            raise ValueError(
                f"MnistConfig.hidden_sizes={self.hidden_sizes} contains non-positive widths {bad_sizes}: every "
                "hidden layer needs at least one unit."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"MnistConfig.hidden_act={self.hidden_act!r} is not supported; use one of "
                f"{', '.join(SUPPORTED_ACTIVATIONS)}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MnistConfig.dropout={self.dropout} is outside the allowed range [0, 1).")
        if self.image_size <= 0:
            raise ValueError(f"MnistConfig.image_size={self.image_size} must be a positive number of pixels.")
        if self.num_channels not in (1, 3):
            raise ValueError(f"MnistConfig.num_channels={self.num_channels} is not supported; use 1 (grey) or 3 (RGB).")
        if self.backbone_freeze not in BACKBONE_FREEZE_MODES:
            raise ValueError(
                f"MnistConfig.backbone_freeze={self.backbone_freeze!r} is not one of "
                f"{', '.join(BACKBONE_FREEZE_MODES)}."
            )
        self._check_backbone()
        if self.num_labels != len(self.id2label):
            raise ValueError(
                f"MnistConfig.num_labels={self.num_labels} does not match id2label, which names "
                f"{len(self.id2label)} classes; pass one of them only."
            )

    def _check_backbone(self):
        if self.backbone is None:
            backbone_settings = {
                "backbone_pretrained": (self.backbone_pretrained, False),
                "backbone_weights_sha256": (self.backbone_weights_sha256, None),
                "backbone_freeze": (self.backbone_freeze, "none"),
            }
            for name, (value, default) in backbone_settings.items():
                if value != default:
                    raise ValueError(
                        f"MnistConfig.{name}={value!r} needs a backbone; set backbone to a timm architecture "
                        f"name, or leave {name} at {default!r}."
                    )
            return

        _check_backbone_name(self.backbone)
        if self.backbone_weights_sha256 is not None:
            if not self.backbone_pretrained:
                raise ValueError(
                    "MnistConfig.backbone_weights_sha256 is set but backbone_pretrained=False; the digest "
                    "describes pretrained weights, so set backbone_pretrained=True or drop the digest."
                )
            if not re.fullmatch(r"[0-9a-f]{64}", self.backbone_weights_sha256):
                raise ValueError(
                    f"MnistConfig.backbone_weights_sha256={self.backbone_weights_sha256!r} is not a SHA-256 "
                    "digest; expected 64 lowercase hexadecimal digits."
                )


def _check_backbone_name(name: str) -> None:
    """Raise `ValueError` unless `name` is a timm architecture, with a valid pretrained tag if it has one.

    The check needs timm and is skipped without it; the model raises `ImportError` when it builds the backbone.
    """
    if not name or ":" in name:
        # "hf-hub:" and "local-dir:" names make timm read a config from the Hub or a folder even without
        # pretrained weights, so a model rebuilt from its config would need that source again.
        raise ValueError(
            f"MnistConfig.backbone={name!r} is not a timm architecture name; give the name without a "
            "'hf-hub:' or 'local-dir:' prefix, optionally with a pretrained tag, for example 'resnet18.a1_in1k'."
        )
    try:
        import timm
    except ImportError:
        return

    if not timm.is_model(name):
        suggestions = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(suggestions)}? " if suggestions else ""
        raise ValueError(
            f"MnistConfig.backbone={name!r} is not a timm architecture; {hint}list the available names with "
            "timm.list_models()."
        )
    architecture, _, tag = name.partition(".")
    if tag:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError as err:
            raise ValueError(
                f"MnistConfig.backbone={name!r}: timm has no pretrained tag {tag!r} for {architecture}; list the "
                f"tags with timm.list_pretrained('{architecture}.*'), or give the name without a tag."
            ) from err


__all__ = ["MnistConfig"]
