"""Configuration of the hf-mnist digit classifier.

This file is shipped to the Hub next to the weights and loaded with `trust_remote_code=True`, so it imports
only the standard library and transformers.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

DIGIT_LABELS = [str(digit) for digit in range(10)]

# Activations the dense head accepts: names from `transformers.activations.ACT2FN` that need no arguments.
SUPPORTED_ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "mish")

BACKBONE_FREEZE_MODES = ("none", "all", "all_but_last_stage")


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
            Height and width of the input image in pixels.
        num_channels (`int`, defaults to 1):
            Channels of `pixel_values` the network reads: 1 (grey) or 3 (RGB).
        backbone (`str`, *optional*):
            Name of a timm architecture, for example `"resnet18"`. `None` keeps the dense network alone.
        backbone_pretrained (`bool`, defaults to `False`):
            Whether a new model starts from the backbone's pretrained weights rather than a random init.
        backbone_freeze (`str`, defaults to `"none"`):
            Which backbone parameters stay fixed in training: `"none"`, `"all"` or `"all_but_last_stage"`.
    """

    model_type = "hf_mnist"

    hidden_sizes: list[int] | tuple[int, ...] = (256, 64)
    hidden_act: str = "relu"
    dropout: float | int = 0.0
    image_size: int = 28
    num_channels: int = 1
    backbone: str | None = None
    backbone_pretrained: bool = False
    backbone_freeze: str = "none"

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        if self.id2label is None:
            self.id2label = dict(enumerate(DIGIT_LABELS))
        if self.label2id is None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        super().__post_init__(**kwargs)
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
        if self.num_labels != len(self.id2label):
            raise ValueError(
                f"MnistConfig.num_labels={self.num_labels} does not match id2label, which names "
                f"{len(self.id2label)} classes; pass one of them only."
            )


__all__ = ["MnistConfig"]
