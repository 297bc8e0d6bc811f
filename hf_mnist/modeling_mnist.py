"""The hf-mnist digit classifier as a transformers `PreTrainedModel`.

This file is shipped to the Hub next to the weights and loaded with `trust_remote_code=True`, so it imports
only the standard library, torch, transformers and, when a backbone is configured, timm.
"""

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_mnist import MnistConfig

# ITU-R 601-2 luma weights, the ones PIL uses for mode "L". They sum to 1, so applying them to normalised
# RGB channels gives the normalised grey value when all channels share one mean and std.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class MnistDenseHead(nn.Module):
    """Hidden dense layers (linear, activation, dropout) followed by the linear classifier."""

    def __init__(self, in_features: int, config: MnistConfig):
        super().__init__()
        layers = []
        for width in config.hidden_sizes:
            layers.append(nn.Linear(in_features, width))
            layers.append(ACT2FN[config.hidden_act])
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            in_features = width
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(features))


class MnistPreTrainedModel(PreTrainedModel):
    config: MnistConfig
    config_class = MnistConfig
    base_model_prefix = "mnist"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The loss is a plain mean over the batch; Trainer scales it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # PyTorch's own default for nn.Linear, so that the network starts exactly as the hand-written
        # MNIST loop does. The `init` helpers skip tensors that were loaded from a checkpoint.
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)


class MnistForImageClassification(MnistPreTrainedModel):
    """Digit classifier: the dense MNIST network, optionally on top of a timm backbone."""

    def __init__(self, config: MnistConfig):
        super().__init__(config)
        self.backbone = None
        if config.backbone is None:
            in_features = config.num_channels * config.image_size * config.image_size
        else:
            self.backbone = _create_backbone(config)
            in_features = self.backbone.num_features
        self.head = MnistDenseHead(in_features, config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, channels, height, width)`):
            Images as the image processor returns them. Three-channel input is reduced to luminance when the
            model reads one channel, so the RGB tensors that `pipeline()` prepares work as well.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Digit classes; when given, the output carries the cross-entropy loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values = self._match_input_channels(pixel_values)

        # Features: the flattened image, or the backbone's pooled features.
        if self.backbone is None:
            features = pixel_values.flatten(1)  # (B, C * H * W)
        else:
            features = self.backbone(pixel_values)  # (B, num_features)
        logits = self.head(features)  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device).long())

        hidden_states = (features,) if output_hidden_states else None
        if not return_dict:
            output = (logits,) if hidden_states is None else (logits, hidden_states)
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _match_input_channels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or pixel_values.shape[2:] != expected[1:]:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}, but this model expects "
                f"(batch, {expected[0]}, {expected[1]}, {expected[2]}); prepare images with the model's "
                "image processor."
            )
        channels = pixel_values.shape[1]
        if channels == expected[0]:
            return pixel_values
        if channels == 3 and expected[0] == 1:
            weights = pixel_values.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
            return (pixel_values * weights).sum(dim=1, keepdim=True)
        if channels == 1 and expected[0] == 3:
            return pixel_values.expand(-1, 3, -1, -1)
        raise ValueError(
            f"pixel_values has {channels} channels; this model reads {expected[0]} and also accepts 1 or 3."
        )


def _create_backbone(config: MnistConfig) -> nn.Module:
    """Build the timm backbone without its classifier, so that it returns pooled features."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"MnistConfig.backbone={config.backbone!r} needs the timm package: pip install timm") from err
    if not timm.is_model(config.backbone):
        raise ValueError(
            f"MnistConfig.backbone={config.backbone!r} is not a timm architecture; list the available "
            "names with timm.list_models()."
        )
    return timm.create_model(config.backbone, pretrained=False, num_classes=0, in_chans=config.num_channels)


__all__ = ["MnistPreTrainedModel", "MnistForImageClassification"]
