"""Batched image-classification pipeline for hf-mnist models.

This file is shipped to the Hub next to the model, and `config.json` names its class under
`custom_pipelines`, so `pipeline("image-classification", model=..., trust_remote_code=True)` builds it. It
imports only transformers, torch and numpy.

The stock `ImageClassificationPipeline` preprocesses and postprocesses one image at a time. For a model that
takes a few microseconds per digit, that per-image Python is nearly all of the run time. This subclass takes
the images `batch_size` at a time through one image processor call, one forward pass and one vectorised
softmax and sort, and returns the same labels and scores, in the same order, as the stock pipeline.
"""

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image
from transformers import ImageClassificationPipeline
from transformers.image_utils import load_image
from transformers.pipelines.image_classification import ClassificationFunction, sigmoid, softmax


class MnistImageClassificationPipeline(ImageClassificationPipeline):
    """
    `ImageClassificationPipeline` that preprocesses, runs and scores the inputs `batch_size` images at a time.

    Lists, datasets and generators of Pillow images, file paths or URLs take the batched route. Batches that hold
    a numpy array or a torch tensor take the stock route image by image, because an array may be a stack of
    several images, which the stock pipeline treats in its own way. So does everything with `num_workers` set,
    since those workers preprocess in parallel. A single image goes through the stock `run_single`.
    """

    def get_iterator(
        self,
        inputs: Iterable,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict,
        forward_params: dict,
        postprocess_params: dict,
    ) -> Iterator:
        if num_workers:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        return self._iterate_batches(iter(inputs), batch_size, preprocess_params, forward_params, postprocess_params)

    def _iterate_batches(
        self,
        images: Iterator,
        batch_size: int,
        preprocess_params: dict,
        forward_params: dict,
        postprocess_params: dict,
    ) -> Iterator[list[dict[str, Any]]]:
        while batch := list(itertools.islice(images, batch_size)):
            if any(isinstance(image, (np.ndarray, torch.Tensor)) for image in batch):
                for image in batch:
                    yield self.run_single(image, preprocess_params, forward_params, postprocess_params)
                continue
            model_inputs = self.preprocess_batch(batch, **preprocess_params)
            model_outputs = self.forward(model_inputs, **forward_params)
            yield from self.postprocess_batch(model_outputs, **postprocess_params)

    def preprocess_batch(self, images: list, timeout: float | None = None):
        """Load a list of Pillow images, paths or URLs and run the image processor once over all of them."""
        loaded = [_load_image(image, timeout) for image in images]
        return self.image_processor(images=loaded, return_tensors="pt").to(self.dtype)

    def postprocess_batch(
        self, model_outputs, function_to_apply: ClassificationFunction | None = None, top_k: int | None = 5
    ) -> list[list[dict[str, Any]]]:
        """Score a batch of logits as `postprocess` scores one image: one list of label/score dicts per image."""
        config = self.model.config
        function_to_apply = _classification_function(config, function_to_apply)
        num_labels = config.num_labels
        if top_k is None or top_k > num_labels:
            top_k = num_labels

        logits = model_outputs["logits"]
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()
        logits = logits.numpy()  # (batch, num_labels)
        if function_to_apply == ClassificationFunction.SIGMOID:
            scores = sigmoid(logits)
        elif function_to_apply == ClassificationFunction.SOFTMAX:
            scores = softmax(logits)
        elif function_to_apply == ClassificationFunction.NONE:
            scores = logits
        else:
            raise ValueError(
                f"function_to_apply must be one of {[choice.value for choice in ClassificationFunction]}, "
                f"got {function_to_apply!r}."
            )

        # A stable sort of the negated scores orders ties by label index, as the stock pipeline's stable sort does.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]  # (batch, top_k)
        top_scores = np.take_along_axis(scores, order, axis=1)
        labels = [config.id2label[index] for index in range(num_labels)]
        return [
            [{"label": labels[index], "score": score} for index, score in zip(row_order, row_scores, strict=True)]
            for row_order, row_scores in zip(order.tolist(), top_scores.tolist(), strict=True)
        ]


def _load_image(image: Any, timeout: float | None) -> Image.Image:
    """
    Load an image as the stock pipeline's `load_image` does, without its copies where they change nothing.

    `load_image` applies the EXIF orientation and converts to RGB. A grey or RGB Pillow image without an
    orientation to apply comes out of that with the same grey levels (Pillow maps R = G = B = v back to v), so
    it is passed on as it is, which saves two copies per image. Other images go through `load_image`.
    """
    if (
        isinstance(image, Image.Image)
        and image.mode in ("L", "RGB")
        and "transparency" not in image.info  # which the image processor would use, and the RGB copy drops
        and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
    ):
        return image
    return load_image(image, timeout=timeout)


def _classification_function(config, requested: ClassificationFunction | None) -> ClassificationFunction:
    """The function that turns logits into scores: `requested`, or the one the config's problem type implies."""
    if requested is not None:
        return requested
    if config.problem_type == "regression":
        return ClassificationFunction.NONE
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return ClassificationFunction.SIGMOID
    if config.problem_type == "single_label_classification" or config.num_labels > 1:
        return ClassificationFunction.SOFTMAX
    return getattr(config, "function_to_apply", None) or ClassificationFunction.NONE


__all__ = ["MnistImageClassificationPipeline"]
