"""Training of the digit classifier with the transformers `Trainer`.

`scripts/train.py` parses the three argument dataclasses defined here and calls `run_training`. The same
code runs as a single process and under `accelerate launch`, where `Trainer` handles the distribution.
"""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .configuration_mnist import MnistConfig
from .data import load_digits, split_summary
from .files import write_json
from .image_processing_mnist import MnistImageProcessor
from .metrics import compute_digit_metrics, trainer_compute_metrics
from .modeling_mnist import MnistForImageClassification
from .preprocessing import DigitTensors, collate_digit_batch, prepare_splits

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which network to train."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Saved model folder or Hub id to continue training from; its config overrides the "
            "architecture flags below. Default: a new network."
        },
    )
    hidden_sizes: list[int] = field(
        default_factory=lambda: [256, 64],
        metadata={"help": "Widths of the hidden dense layers, in order. Default: 256 64."},
    )
    hidden_act: str = field(default="relu", metadata={"help": "Hidden-layer activation. Default: relu."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout probability after each hidden layer, in [0, 1). Default: 0."}
    )


@dataclass
class DataArguments:
    """Where the digits come from and how they are split."""

    dataset_name: str = field(
        default="sample",
        metadata={
            "help": "'sample' (5,000 real digits shipped with hf-mnist), a Hub dataset id such as "
            "ylecun/mnist, or a local Kaggle CSV, IDX folder, image folder, parquet file or "
            "save_to_disk folder. Default: sample."
        },
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of train carved out as a stratified validation split when the source has none."},
    )
    test_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of train carved out as a stratified test split when the source has none."},
    )
    image_column: str = field(default="image", metadata={"help": "Image column in the source."})
    label_column: str = field(default="label", metadata={"help": "Label column in the source."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on at most this many examples (for quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many examples per split."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the one-time decoding of images. Default: 1."}
    )


@dataclass
class MnistTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit a small dense network on MNIST."""

    output_dir: str = field(
        default="outputs/mnist-mlp", metadata={"help": "Folder for checkpoints, the final model and results."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into a non-empty output_dir, replacing what a previous run left there."},
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "Passes over the training split."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of AdamW."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch size per device."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to validate: no, steps or epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: no, steps, epoch or best."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept; the best one is always among them."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Finish with the checkpoint of best validation accuracy."}
    )
    metric_for_best_model: str | None = field(
        default="accuracy", metadata={"help": "Validation metric that picks the best checkpoint."}
    )
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    # Without an accelerator, TrainingArguments only sets up multi-process (gloo) training when use_cpu is
    # true; with its own default, `accelerate launch --num_processes 2` would run two separate trainings.
    use_cpu: bool = field(
        default=not torch.accelerator.is_available(),
        metadata={"help": "Train on the CPU even if a GPU is available. Default: true only without a GPU."},
    )
    # Pinned memory only helps copies to a GPU; on CPU it costs time and warns.
    dataloader_pin_memory: bool = field(
        default=torch.cuda.is_available(), metadata={"help": "Pin batches in memory for faster GPU copies."}
    )
    # The prepared splits hold only model inputs, fetched a whole batch at a time, so there is nothing for
    # Trainer's per-example column removal to do, and its wrapper would split the ready batches apart.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Unsupported by hf-mnist, whose datasets hold only model inputs."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement. Default: never stop early."},
    )


def check_training_arguments(training_args: MnistTrainingArguments) -> None:
    """Reject settings that cannot work on this machine, before any data is loaded."""
    if training_args.fp16 and training_args.bf16:
        raise ValueError("--fp16 and --bf16 were both given; choose one mixed-precision mode.")
    if training_args.fp16 and not torch.cuda.is_available():
        raise ValueError(
            "--fp16 needs a CUDA GPU and none is available; drop --fp16, or use --bf16 for mixed precision on CPU."
        )
    if training_args.remove_unused_columns:
        raise ValueError(
            "--remove_unused_columns true is not supported: hf-mnist's prepared datasets hold only the model "
            "inputs pixel_values and labels. Drop the flag."
        )
    if training_args.load_best_model_at_end and training_args.eval_strategy != training_args.save_strategy:
        raise ValueError(
            f"--load_best_model_at_end needs --eval_strategy ({training_args.eval_strategy}) and "
            f"--save_strategy ({training_args.save_strategy}) to match; set both to epoch or steps."
        )


def find_checkpoint(training_args: MnistTrainingArguments) -> str | None:
    """Return the checkpoint to resume from, and refuse to train over a previous run by accident."""
    output_dir = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    if resume not in (None, False, "", "false", "False"):
        if str(resume).lower() == "true":
            last = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
            if last is None:
                raise ValueError(
                    f"--resume_from_checkpoint true found no checkpoint-* folder in {output_dir}; drop the "
                    "flag to start a new run, or give the path of a checkpoint."
                )
            return last
        if not Path(resume).is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume}: no such checkpoint folder; give a checkpoint-* folder "
                "of a previous run, or true for the latest one in --output_dir."
            )
        return str(resume)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not training_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} already holds files from a previous run; resume it with "
            "--resume_from_checkpoint true, choose another --output_dir, or pass --overwrite_output_dir."
        )
    return None


def build_model(model_args: ModelArguments, data_args: DataArguments) -> MnistForImageClassification:
    if model_args.model_name_or_path:
        return MnistForImageClassification.from_pretrained(model_args.model_name_or_path)
    config = MnistConfig(
        hidden_sizes=model_args.hidden_sizes,
        hidden_act=model_args.hidden_act,
        dropout=model_args.dropout,
    )
    return MnistForImageClassification(config)


def build_image_processor(config: MnistConfig) -> MnistImageProcessor:
    return MnistImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, num_channels=config.num_channels
    )


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: MnistTrainingArguments) -> dict:
    """Train, validate every epoch, keep the best checkpoint, test, and save everything to output_dir.

    Returns the combined train, validation and test metrics, as also written to `all_results.json`.
    """
    check_training_arguments(training_args)
    checkpoint = find_checkpoint(training_args)
    push_repo_id = _take_over_push(training_args)
    set_seed(training_args.seed)

    # Data: load, split and decode once; datasets caches the decoded tensors for the next run.
    with training_args.main_process_first(desc="loading and preprocessing the digits"):
        raw = load_digits(
            data_args.dataset_name,
            validation_fraction=data_args.validation_fraction,
            test_fraction=data_args.test_fraction,
            seed=training_args.seed,
            image_column=data_args.image_column,
            label_column=data_args.label_column,
        )
        if "train" not in raw or "label" not in raw["train"].column_names:
            raise ValueError(
                f"--dataset_name {data_args.dataset_name} has no labelled train split (splits: "
                f"{list(raw)}); training needs labelled digits."
            )
        model = build_model(model_args, data_args)
        image_processor = build_image_processor(model.config)
        splits = prepare_splits(
            raw,
            image_processor,
            max_train_samples=data_args.max_train_samples,
            max_eval_samples=data_args.max_eval_samples,
            num_proc=data_args.preprocessing_num_workers,
        )
    tensors = {name: DigitTensors(split) for name, split in splits.items()}
    sizes = split_summary(splits)
    logger.info("Digits from %s, split sizes: %s", data_args.dataset_name, sizes)
    logger.info("Model: %s, %d parameters", _describe(model.config), model.num_parameters())
    logger.info(
        "Batch size %d per device × %d accumulation steps × %d processes = %d examples per optimizer step",
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
        training_args.world_size,
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size,
    )

    callbacks = []
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(training_args.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=collate_digit_batch,
        train_dataset=tensors["train"],
        eval_dataset=tensors.get("validation"),
        processing_class=image_processor,
        compute_metrics=trainer_compute_metrics,
        callbacks=callbacks,
    )

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(tensors["train"])
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    # Final scores of the kept model on every held-out split, with the full per-class breakdown.
    details = {}
    for split_name in ("validation", "test"):
        if split_name not in tensors:
            continue
        prediction = trainer.predict(tensors[split_name], metric_key_prefix=split_name)
        split_metrics = dict(prediction.metrics)
        split_metrics[f"{split_name}_samples"] = len(tensors[split_name])
        trainer.log_metrics(split_name, split_metrics)
        trainer.save_metrics(split_name, split_metrics)
        metrics.update(split_metrics)
        if trainer.is_world_process_zero():
            details[split_name] = compute_digit_metrics(prediction.predictions.argmax(axis=-1), prediction.label_ids)

    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        write_json(output_dir / "evaluation_details.json", details)
        write_json(output_dir / "run_info.json", describe_run(model, data_args, training_args, sizes))
        _log_summary(training_args.output_dir, metrics)

    if push_repo_id is not None:
        push_error = None
        if trainer.is_world_process_zero():
            from .hub import HubAccessError, HubPushError, push_output_dir

            try:
                push_output_dir(
                    training_args.output_dir,
                    push_repo_id,
                    token=training_args.hub_token,
                    private=training_args.hub_private_repo,
                )
            except (HubAccessError, HubPushError, ConnectionError) as err:
                # Raised after the barrier, so that the other processes exit instead of waiting at it.
                push_error = err
        trainer.accelerator.wait_for_everyone()
        if push_error is not None:
            raise push_error
    return metrics


def _take_over_push(training_args: MnistTrainingArguments) -> str | None:
    """Check Hub access before training, and push once at the end instead of Trainer's push on every save.

    Trainer's own `--push_to_hub` uploads each checkpoint with a generic card; hf-mnist pushes the final
    folder once, with its own model card. Returns the repo id to push to, or None.
    """
    if not training_args.push_to_hub:
        return None
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name, the Hub repo to create or update.")
    if training_args.process_index == 0:
        from .hub import check_push_access

        check_push_access(training_args.hub_model_id, token=training_args.hub_token)
    training_args.push_to_hub = False
    return training_args.hub_model_id


def dataset_provenance(dataset_name: str) -> dict:
    """Where the digits came from, with no local path: `sample`, a Hub id, or only the kind of local source."""
    if dataset_name == "sample":
        return {"source": "sample", "hub_id": None}
    path = Path(dataset_name).expanduser()
    if path.exists():
        kind = path.suffix.lstrip(".").lower() if path.is_file() else "folder"
        return {"source": "local", "hub_id": None, "format": kind or "file"}
    return {"source": "hub", "hub_id": dataset_name}


def describe_run(
    model: MnistForImageClassification,
    data_args: DataArguments,
    training_args: MnistTrainingArguments,
    split_sizes: dict[str, int],
) -> dict:
    """Facts of the run that results files do not hold, for the model card: data, hyperparameters, versions."""
    import accelerate
    import datasets
    import transformers

    world_size = training_args.world_size
    per_device = training_args.per_device_train_batch_size
    accumulation = training_args.gradient_accumulation_steps
    return {
        "dataset": dataset_provenance(data_args.dataset_name),
        "split_sizes": split_sizes,
        "architecture": _describe(model.config),
        "num_parameters": model.num_parameters(),
        "hyperparameters": {
            "num_train_epochs": training_args.num_train_epochs,
            "learning_rate": training_args.learning_rate,
            "optimizer": getattr(training_args.optim, "value", training_args.optim),
            "weight_decay": training_args.weight_decay,
            "lr_scheduler_type": getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
            "warmup_steps": training_args.warmup_steps,
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accumulation,
            "num_processes": world_size,
            "effective_batch_size": per_device * accumulation * world_size,
            "mixed_precision": training_args.mixed_precision,
            "seed": training_args.seed,
            "metric_for_best_model": training_args.metric_for_best_model,
            "load_best_model_at_end": training_args.load_best_model_at_end,
        },
        "framework_versions": {
            "hf_mnist": _package_version(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "accelerate": accelerate.__version__,
        },
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hf-mnist")
    except PackageNotFoundError:
        return "unknown"


def _describe(config: MnistConfig) -> str:
    widths = [config.num_channels * config.image_size**2, *config.hidden_sizes, config.num_labels]
    dense = "→".join(str(width) for width in widths)
    return dense if config.backbone is None else f"{config.backbone} backbone + dense head {dense}"


def _log_summary(output_dir: str, metrics: dict) -> None:
    held_out = "test" if "test_accuracy" in metrics else "validation"
    accuracy = metrics.get(f"{held_out}_accuracy", math.nan)
    samples = metrics.get(f"{held_out}_samples", 0)
    location = os.path.abspath(output_dir)
    logger.info(
        "Done. Accuracy on %d held-out %s digits: %.4f. Model saved to %s\nUse it with:\n"
        '  python -c \'from transformers import pipeline; print(pipeline("image-classification", '
        'model="%s", trust_remote_code=True)("digit.png"))\'',
        samples,
        held_out,
        accuracy,
        location,
        location,
    )


__all__ = [
    "DataArguments",
    "ModelArguments",
    "MnistTrainingArguments",
    "check_training_arguments",
    "find_checkpoint",
    "run_training",
]
