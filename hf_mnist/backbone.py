"""Training-time set-up of timm backbones: pretrained weights, the input they expect, and checks.

`MnistForImageClassification` builds its backbone with timm's random init and never fetches weights, so
that loading a saved or pushed model needs neither the network nor the original weights.
`load_pretrained_backbone` fills the backbone of a new model before training, from the weights timm publishes
(Hugging Face Hub or the local HF cache) or from a local `.safetensors`/`.pth` file. After that the weights
travel in the model's own `model.safetensors`.
"""

import hashlib
import logging
import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers.image_utils import PILImageResampling

from .configuration_mnist import MnistConfig
from .image_processing_mnist import MNIST_MEAN, MNIST_STD
from .modeling_mnist import MnistForImageClassification, backbone_create_kwargs

logger = logging.getLogger(__name__)

WEIGHTS_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

# Weights file names that timm looks for in a Hub repo without a `hf_hub_filename`, in its order.
_HUB_WEIGHTS_NAMES = ["model.safetensors", "pytorch_model.bin"]

# timm interpolation names that MnistImageProcessor also supports.
_RESAMPLE = {"bilinear": PILImageResampling.BILINEAR, "bicubic": PILImageResampling.BICUBIC}
_DEFAULT_RESAMPLE = PILImageResampling.BILINEAR

# Errors that reading a damaged or foreign weights file raises: OSError for I/O, RuntimeError and
# UnpicklingError from torch.load and from load_state_dict, SafetensorError for a bad safetensors header,
# ValueError from timm's own checks.
_READ_ERRORS = (OSError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError)


def check_weights_file(weights_file: str | os.PathLike) -> Path:
    """Return `weights_file` as a `Path`, or raise if it is missing or not a weights format timm reads."""
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Backbone weights file {path} does not exist; give the path of a .safetensors or .pth file, or use "
            "timm's published weights (backbone_pretrained without a file)."
        )
    if path.suffix not in WEIGHTS_FILE_SUFFIXES:
        raise ValueError(
            f"Backbone weights file {path} has the suffix {path.suffix!r}; timm reads "
            f"{', '.join(WEIGHTS_FILE_SUFFIXES)} files."
        )
    return path


def load_pretrained_backbone(model: MnistForImageClassification, weights_file: str | os.PathLike | None = None) -> None:
    """Copy pretrained weights into `model.backbone` and record their source in `model.config`.

    Without `weights_file` the weights are the ones timm publishes for `config.backbone`, downloaded from
    the Hub or read from the HF cache. With it, they are read from that local `.safetensors` or `.pth` file,
    which contains a timm state dict of the same architecture, with or without its classifier. timm adapts the
    pretrained stem to `config.num_channels`; for one channel it sums the RGB filters.

    Raises `FileNotFoundError` when the file is missing or the published weights can be neither downloaded
    nor found in the cache, and `ValueError` when the weights do not fit the architecture or none exist.
    """
    import timm

    config = model.config
    if model.backbone is None:
        raise ValueError("load_pretrained_backbone needs a model with a backbone; this config has backbone=None.")

    # Build a timm model that loads the pretrained weights strictly. Its classifier has the size that the
    # weights have, so that timm keeps strict loading on and a file that does not fit raises.
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    create_kwargs = backbone_create_kwargs(config)
    digest = None
    if weights_file is None:
        _check_published_weights(config.backbone, pretrained_cfg)
        create_kwargs["num_classes"] = pretrained_cfg.num_classes
        source = _create_from_published(config.backbone, pretrained_cfg, create_kwargs)
    else:
        path = check_weights_file(weights_file)
        create_kwargs["num_classes"] = _classifier_size(path, config.backbone, pretrained_cfg)
        source = _create_from_file(config.backbone, path, create_kwargs)
        digest = file_sha256(path)

    # Copy every tensor the backbone has. The source has the same layers plus, possibly, a classifier.
    source_state = source.state_dict()
    target_state = model.backbone.state_dict()
    missing = [key for key in target_state if key not in source_state]
    if missing:
        raise ValueError(
            f"timm's pretrained {config.backbone} lacks {len(missing)} backbone tensors such as {missing[0]!r}; "
            "the architecture built with num_classes=0 differs from the pretrained one."
        )
    model.backbone.load_state_dict({key: source_state[key] for key in target_state}, strict=True)

    config.backbone_pretrained = True
    config.backbone_weights_sha256 = digest
    source_name = "timm's published weights" if digest is None else f"a local file with SHA-256 {digest}"
    logger.info("Backbone %s starts from %s", config.backbone, source_name)


def check_backbone_input_size(model: MnistForImageClassification) -> None:
    """Run the backbone once on a blank batch, so that an input size it cannot take fails before training."""
    config = model.config
    if model.backbone is None:
        return
    blank = torch.zeros(2, config.num_channels, config.image_size, config.image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.backbone(blank)
    # timm reports a size it cannot take with asserts or with the errors of the failing operation.
    except (AssertionError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"Backbone {config.backbone!r} cannot run on {config.image_size}×{config.image_size} inputs "
            f"({_summary(err)}). Choose another image size; timm's pretrained input size for it is "
            f"{_pretrained_size(config)}."
        ) from err
    finally:
        model.train(was_training)


def backbone_image_settings(config: MnistConfig) -> dict:
    """Return `image_mean`, `image_std` and `resample` of the image processor that feeds `config`'s model.

    A pretrained backbone gets the normalization and interpolation of timm's pretrained cfg, also when its
    weights come from a local file. A one-channel model gets the average of the per-channel values: its stem
    sums the RGB filters, which reproduces the RGB network on a grey image exactly when the channels share
    one mean and std, and closely for ImageNet's. Otherwise the MNIST statistics are used for each channel.
    """
    channels = config.num_channels
    mean, std, resample = [MNIST_MEAN] * channels, [MNIST_STD] * channels, _DEFAULT_RESAMPLE
    if config.backbone is None or not config.backbone_pretrained:
        return {"image_mean": mean, "image_std": std, "resample": resample}

    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    if pretrained_cfg is None:
        logger.warning(
            "timm has no pretrained cfg for %s, so its inputs are normalized with the MNIST statistics.",
            config.backbone,
        )
        return {"image_mean": mean, "image_std": std, "resample": resample}

    # NOTE: a local weights file is assumed to follow the normalization of timm's pretrained cfg. A file
    # trained with other statistics needs a processor with those statistics.
    mean, std = list(pretrained_cfg.mean), list(pretrained_cfg.std)
    if channels == 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    elif len(mean) != channels:
        mean, std = [mean[0]] * channels, [std[0]] * channels
    resample = _RESAMPLE.get(pretrained_cfg.interpolation, _DEFAULT_RESAMPLE)
    return {"image_mean": mean, "image_std": std, "resample": resample}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_published_weights(backbone: str, pretrained_cfg) -> None:
    if pretrained_cfg is None or not (pretrained_cfg.hf_hub_id or pretrained_cfg.url):
        architecture = backbone.partition(".")[0]
        raise ValueError(
            f"timm publishes no pretrained weights for backbone {backbone!r}; pass a local weights file, start "
            f"from random weights, or pick an architecture listed by timm.list_pretrained('{architecture}*')."
        )


def _create_from_published(backbone: str, pretrained_cfg, create_kwargs: dict) -> torch.nn.Module:
    import timm

    _check_hub_reachable(backbone, pretrained_cfg)
    try:
        return timm.create_model(backbone, pretrained=True, **create_kwargs)
    # OSError covers the Hub client's errors (LocalEntryNotFoundError when it is offline or unreachable and
    # the cache is empty, HTTP errors) and urllib's, for weights that timm downloads from a plain URL.
    except OSError as err:
        raise FileNotFoundError(_unavailable_message(backbone, err)) from err


def _check_hub_reachable(backbone: str, pretrained_cfg) -> None:
    """Raise at once when the published weights are on the Hub, not in the cache, and the Hub is unreachable.

    Without a cached copy, huggingface_hub 2.4 retries a failed request with back-off for about 25 seconds,
    for each of the two file names timm tries. One request without retries fails in well under a second.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx

    # Offline mode fails without any request, and timm downloads URL weights with a single attempt.
    if constants.is_offline_mode() or not pretrained_cfg.hf_hub_id:
        return
    repo_id, _, revision = pretrained_cfg.hf_hub_id.partition("@")
    filenames = [pretrained_cfg.hf_hub_filename] if pretrained_cfg.hf_hub_filename else _HUB_WEIGHTS_NAMES
    for filename in filenames:
        if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision or None), str):
            return
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filenames[0], revision=revision or None), retry_on_errors=False)
    except httpx.TransportError as err:
        raise FileNotFoundError(_unavailable_message(backbone, err)) from err
    except HfHubHTTPError:
        pass  # the Hub is reachable, and timm's own request reports the HTTP error


def _unavailable_message(backbone: str, err: BaseException) -> str:
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
    return (
        f"Could not get the pretrained weights of backbone {backbone!r}: they are not in the HF cache and "
        f"{constants.ENDPOINT}{offline} did not provide them. Connect once so that timm caches them, pass a "
        f"local weights file instead, or start from random weights. The error was: {_summary(err)}"
    )


def _create_from_file(backbone: str, path: Path, create_kwargs: dict) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **create_kwargs)
    except _READ_ERRORS as err:
        raise ValueError(
            f"Backbone weights file {path} does not fit timm's {backbone} with in_chans="
            f"{create_kwargs['in_chans']}. Pass a file saved from a {backbone} model (its state_dict, with or "
            "without the classifier), or set the backbone to the architecture of the file. timm reported: "
            f"{_summary(err)}"
        ) from err


def _classifier_size(path: Path, backbone: str, pretrained_cfg) -> int:
    """Return the number of classes of the classifier in the weights file, 0 when it has none."""
    import timm

    try:
        state_dict = timm.models.load_state_dict(str(path))
    except _READ_ERRORS as err:
        raise ValueError(
            f"Backbone weights file {path} could not be read as a state dict. Pass a .safetensors file, or a .pth "
            f"file written by torch.save(model.state_dict()). The reader reported: {_summary(err)}"
        ) from err

    classifier = pretrained_cfg.classifier if pretrained_cfg is not None else None
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0]
    weight = state_dict.get(f"{classifier}.weight") if classifier else None
    if weight is None:
        return 0
    logger.info(
        "Backbone weights file %s contains a %d-class %s classifier, which the backbone does not use",
        path,
        len(weight),
        backbone,
    )
    return len(weight)


def _pretrained_size(config: MnistConfig) -> str:
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    if pretrained_cfg is None or not pretrained_cfg.input_size:
        return "unknown"
    height, width = pretrained_cfg.input_size[1:]
    return f"{height}×{width}"


def _summary(err: BaseException, max_chars: int = 400) -> str:
    """Return the message of `err` on one line, cut to `max_chars`: state-dict errors list every key."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


__all__ = [
    "WEIGHTS_FILE_SUFFIXES",
    "backbone_image_settings",
    "check_backbone_input_size",
    "check_weights_file",
    "file_sha256",
    "load_pretrained_backbone",
]
