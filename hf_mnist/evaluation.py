"""Scoring a saved digit classifier on any supported data source and split.

Evaluation goes through `Trainer.predict`, so that under `accelerate launch` every process scores a shard
and the gathered predictions cover each example of the split exactly once.
"""

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from .data import load_digits
from .files import write_json
from .image_processing_mnist import MnistImageProcessor
from .metrics import compute_digit_metrics
from .modeling_mnist import MnistForImageClassification
from .preprocessing import DigitTensors, collate_digit_batch, prepare_split

logger = logging.getLogger(__name__)


@dataclass
class EvaluationArguments:
    """Arguments of scripts/evaluate_model.py: the model, the data source and split, and the output file."""

    model: str = field(metadata={"help": "Saved model folder (a training output_dir) or Hub model id."})
    dataset_name: str = field(
        default="sample", metadata={"help": "Data source, as for training: sample, a Hub id or a local path."}
    )
    split: str = field(default="test", metadata={"help": "Split to score: train, validation or test."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Batch size per process."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the metrics to this file."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "As in training, so that carved splits are the same rows."}
    )
    test_fraction: float = field(
        default=0.1, metadata={"help": "As in training, so that carved splits are the same rows."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the carved splits; use the training seed."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Score only the first N examples."})
    bf16: bool = field(default=False, metadata={"help": "Run the forward pass in bfloat16 autocast."})


def evaluate_saved_model(args: EvaluationArguments) -> dict:
    """Score `args.model` on `args.split` of `args.dataset_name`; return and optionally save the metrics."""
    model = MnistForImageClassification.from_pretrained(args.model)
    image_processor = MnistImageProcessor.from_pretrained(args.model)
    raw = load_digits(
        args.dataset_name,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    if args.split not in raw:
        raise ValueError(
            f"--split {args.split} is not in {args.dataset_name}, which has the splits {sorted(raw)}; "
            "choose one of those."
        )
    if "label" not in raw[args.split].column_names:
        raise ValueError(
            f"--split {args.split} of {args.dataset_name} has no labels to score against; use "
            "scripts/predict.py for unlabelled digits."
        )

    with tempfile.TemporaryDirectory(prefix="hf-mnist-eval-") as scratch:
        trainer_args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=args.per_device_eval_batch_size,
            bf16=args.bf16,
            report_to="none",
            dataloader_pin_memory=False,
            remove_unused_columns=False,
            # Without an accelerator, TrainingArguments sets up multi-process (gloo) work only with use_cpu:
            # otherwise every process of `accelerate launch` scores the whole split and writes the results.
            use_cpu=not torch.accelerator.is_available(),
        )
        with trainer_args.main_process_first(desc="preprocessing the evaluation split"):
            split = prepare_split(raw[args.split], image_processor, max_samples=args.max_eval_samples)
        trainer = Trainer(
            model=model, args=trainer_args, data_collator=collate_digit_batch, processing_class=image_processor
        )
        prediction = trainer.predict(DigitTensors(split, image_processor), metric_key_prefix=args.split)

    metrics = compute_digit_metrics(prediction.predictions.argmax(axis=-1), prediction.label_ids)
    metrics.update({"model": _public_name(args.model), "dataset": _public_name(args.dataset_name)})
    metrics["split"] = args.split
    if trainer.is_world_process_zero():
        logger.info(
            "%s on %s/%s: accuracy %.4f, macro-F1 %.4f over %d digits",
            metrics["model"],
            metrics["dataset"],
            args.split,
            metrics["accuracy"],
            metrics["f1_macro"],
            metrics["num_samples"],
        )
        if args.output_json:
            write_json(Path(args.output_json), metrics)
    return metrics


def _public_name(source: str) -> str:
    """Return the folder name of a local path, so that results never contain a user's directory layout."""
    return Path(source).name if os.path.exists(source) else source


__all__ = ["EvaluationArguments", "evaluate_saved_model"]
