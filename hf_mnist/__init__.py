"""Handwritten-digit classification with the Hugging Face ecosystem.

Importing the package registers the model, its config and its image processor with the transformers auto
classes, both in this process and for `save_pretrained`. `save_pretrained` then copies the four shipped
source files (config, model, image processor and batched pipeline) next to the weights, so the folder loads
with `trust_remote_code=True` where hf_mnist is not installed.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .configuration_mnist import MnistConfig
from .image_processing_mnist import MnistImageProcessor
from .modeling_mnist import MnistForImageClassification, MnistPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(MnistConfig.model_type, MnistConfig, exist_ok=True)
AutoModelForImageClassification.register(MnistConfig, MnistForImageClassification, exist_ok=True)
AutoImageProcessor.register(MnistConfig, MnistImageProcessor, exist_ok=True)

MnistConfig.register_for_auto_class()
MnistForImageClassification.register_for_auto_class("AutoModelForImageClassification")
MnistImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "MnistConfig",
    "MnistForImageClassification",
    "MnistImageProcessor",
    "MnistPreTrainedModel",
]
