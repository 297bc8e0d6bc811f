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

# Not used here: importing the pipeline makes `save_pretrained` copy its file next to this one, and makes
# remote-code loading fetch it, as the config's `custom_pipelines` entry needs.
from .pipeline_mnist import MnistImageClassificationPipeline  # noqa: F401

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
        # The dense head gets PyTorch's own default for nn.Linear, so that the network starts exactly as the
        # hand-written MNIST loop does. The `init` helpers skip tensors that were loaded from a checkpoint.
        if isinstance(module, nn.Linear) and _is_submodule(module, getattr(self, "head", None)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif hasattr(module, "init_non_persistent_buffers"):
            # Backbone parameters keep the init that timm gave them when it built the backbone. Only the
            # buffers that timm computes rather than saves are refilled: `from_pretrained` builds the model
            # on the meta device, and the checkpoint does not hold them. timm names this hook.
            module.init_non_persistent_buffers()


class MnistForImageClassification(MnistPreTrainedModel):
    """Digit classifier: the dense MNIST network, optionally on top of a timm backbone."""

    def __init__(self, config: MnistConfig):
        super().__init__(config)
        self._frozen_norm_names: tuple[str, ...] = ()
        self.backbone = None
        if config.backbone is None:
            in_features = config.num_channels * config.image_size * config.image_size
        else:
            self.backbone = _create_backbone(config)
            # Some architectures (MambaOut, for one) end in a pre-logits layer wider than `num_features`;
            # timm gives the width of what a headless model returns as `head_hidden_size`.
            in_features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = MnistDenseHead(in_features, config)
        self.post_init()
        self._frozen_norm_names = self._freeze_backbone()
        self.train(self.training)

    def _freeze_backbone(self) -> tuple[str, ...]:
        """Turn off gradients of the backbone parameters that `config.backbone_freeze` fixes.

        Returns the names of the frozen BatchNorm layers, which `train` keeps in eval mode. Frozen parameters
        get `requires_grad=False`, so DDP leaves them out of its gradient reduction.
        """
        if self.backbone is None or self.config.backbone_freeze == "none":
            return ()
        modules = list(self.backbone.named_modules())
        if self.config.backbone_freeze == "all":
            first_trainable = len(modules)
        else:
            first_trainable = _last_stage_index(self.backbone, modules, self.config.backbone)

        frozen_norms = []
        for name, module in modules[:first_trainable]:
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                frozen_norms.append(name)
        return tuple(frozen_norms)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers 5.25 puts each loaded tensor into a new parameter that requires gradients, which
        # undoes the freeze applied in __init__.
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model._frozen_norm_names = model._freeze_backbone()
        model.train(model.training)
        return loaded

    def train(self, mode: bool = True):
        super().train(mode)
        # A frozen BatchNorm layer also keeps its running statistics, which otherwise change in train mode.
        for name in self._frozen_norm_names:
            self.backbone.get_submodule(name).eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        digit_found: torch.Tensor | None = None,
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
        digit_found (`torch.BoolTensor` of shape `(batch_size,)`, *optional*):
            The image processor's flag for images in which it found no digit. Their logits are set to zero, so
            every class scores 1/num_labels instead of a confident guess on an empty frame.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values = self._match_input_channels(pixel_values)

        # Features: the flattened image, or the backbone's pooled features.
        if self.backbone is None:
            features = pixel_values.flatten(1)  # (B, C * H * W)
        else:
            features = self.backbone(pixel_values)  # (B, num_features)
        logits = self.head(features)  # (B, num_labels)
        if digit_found is not None:
            found = torch.as_tensor(digit_found, device=logits.device).bool().view(-1, 1)
            logits = torch.where(found, logits, torch.zeros_like(logits))

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


def backbone_create_kwargs(config: MnistConfig) -> dict:
    """Return the `timm.create_model` keyword arguments of the backbone, except `pretrained`.

    The backbone has no classifier (`num_classes=0`), so that it returns pooled features, and reads
    `config.num_channels` channels. Architectures whose pretrained cfg fixes the input size (ViTs, Swin and
    others) are built for `config.image_size`.
    """
    import timm

    kwargs = {"num_classes": 0, "in_chans": config.num_channels}
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs["img_size"] = config.image_size
    return kwargs


def _create_backbone(config: MnistConfig) -> nn.Module:
    """Build the timm backbone with timm's random init; pretrained weights are never fetched here."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"MnistConfig.backbone={config.backbone!r} needs the timm package: pip install timm") from err
    if not timm.is_model(config.backbone):
        raise ValueError(
            f"MnistConfig.backbone={config.backbone!r} is not a timm architecture; list the available "
            "names with timm.list_models()."
        )
    return timm.create_model(config.backbone, pretrained=False, **backbone_create_kwargs(config))


def _last_stage_index(backbone: nn.Module, modules: list[tuple[str, nn.Module]], backbone_name: str) -> int:
    """Return the position in `modules` where the backbone's last stage starts.

    timm's `feature_info` names the modules whose outputs are the feature levels, from the stem to the
    deepest. The last stage is every module registered after the second-deepest of them: the layers that
    produce the deepest features, and the final norms or head convolutions that follow.

    NOTE: this relies on registration order following the forward pass, as it does in the timm models
    checked (ResNet, EfficientNet, MobileNetV3, ConvNeXt, ViT, Swin, RegNet, DenseNet, Inception). A model
    that registers a late layer early would have that layer frozen.
    """
    names = [name for name, _ in modules]
    feature_info = getattr(backbone, "feature_info", None) or []
    stage_names = [info["module"] for info in feature_info if isinstance(info, dict) and "module" in info]
    if len(stage_names) >= 2 and stage_names[-2] in names:
        previous_stage = stage_names[-2]
        index = names.index(previous_stage) + 1
        while index < len(names) and names[index].startswith(previous_stage + "."):
            index += 1
        if any(True for _, module in modules[index:] for _ in module.parameters(recurse=False)):
            return index
    raise ValueError(
        f"MnistConfig.backbone_freeze='all_but_last_stage' needs the feature levels that timm lists in "
        f"feature_info, and the backbone {backbone_name!r} lists too few; use backbone_freeze='all' or 'none'."
    )


def _is_submodule(module: nn.Module, parent: nn.Module | None) -> bool:
    return parent is not None and any(module is child for child in parent.modules())


__all__ = ["MnistPreTrainedModel", "MnistForImageClassification"]
