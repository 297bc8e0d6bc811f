"""Training of the digit classifier with the transformers `Trainer`.

`scripts/train.py` parses the three argument dataclasses defined here and calls `run_training`. The same
code runs as a single process and under `accelerate launch`, where `Trainer` handles the distribution.
"""

import contextlib
import functools
import gc
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy

from .backbone import backbone_image_settings, check_backbone_input_size, check_weights_file, load_pretrained_backbone
from .configuration_mnist import BACKBONE_FREEZE_MODES, MnistConfig
from .data import load_digits, split_summary
from .files import write_json
from .image_processing_mnist import MnistImageProcessor
from .metrics import compute_digit_metrics, trainer_compute_metrics
from .modeling_mnist import MnistForImageClassification
from .preprocessing import DigitTensors, collate_digit_batch, prepare_splits

logger = logging.getLogger(__name__)

# Backbone input size without --backbone_image_size: the common CNNs, whose total stride is 32, still end
# with a 1×1 feature map, and a 28×28 digit needs only a small upscale.
DEFAULT_BACKBONE_IMAGE_SIZE = 32


@dataclass
class ModelArguments:
    """Network to train: the dense network alone, or a timm backbone under the same dense head."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Saved model folder or Hub id to continue training from; its config overrides the "
            "architecture flags below. Default: a new network."
        },
    )
    hidden_sizes: list[int] | None = field(
        default=None,
        metadata={
            "help": "Widths of the hidden dense layers, in order. Default: 256 64; with --backbone, none "
            "(one linear layer on the pooled features)."
        },
    )
    hidden_act: str = field(default="relu", metadata={"help": "Hidden-layer activation. Default: relu."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout probability after each hidden layer, in [0, 1). Default: 0."}
    )
    num_channels: int | None = field(
        default=None,
        metadata={
            "help": "Input channels: 1 (grey) or 3 (the grey digit repeated as RGB, the input of ImageNet "
            "backbones). Default: 1."
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "timm architecture under the dense head, such as resnet18, optionally with a pretrained tag "
            "(resnet18.a1_in1k). Default: none, the dense network alone."
        },
    )
    backbone_pretrained: bool = field(
        default=False,
        metadata={
            "help": "Start the backbone from the weights timm publishes for it, downloaded from the Hub or read "
            "from the HF cache. Default: timm's random init."
        },
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={
            "help": "Local .safetensors or .pth file with pretrained backbone weights (a timm state dict); "
            "implies --backbone_pretrained. The saved config records its SHA-256, never its path."
        },
    )
    backbone_image_size: int | None = field(
        default=None,
        metadata={
            "help": "Height and width in pixels of the backbone input; the 28×28 digits are resized to it. "
            f"Default: {DEFAULT_BACKBONE_IMAGE_SIZE}."
        },
    )
    freeze_backbone: str | None = field(
        default=None,
        metadata={
            "help": "Backbone parameters kept fixed in training: none, all, or all_but_last_stage (the last "
            "stage still trains). The flag without a value means all. Default: none.",
            "choices": list(BACKBONE_FREEZE_MODES),
            "nargs": "?",
            "const": "all",
        },
    )

    def __post_init__(self):
        # Checked here, while the arguments are parsed, so that a wrong combination fails before any data loads.
        if isinstance(self.freeze_backbone, bool):  # `freeze_backbone: true` in a YAML or JSON file
            self.freeze_backbone = "all" if self.freeze_backbone else "none"
        if self.backbone_weights is not None:
            check_weights_file(self.backbone_weights)
            self.backbone_pretrained = True

        architecture_flags = {
            "--backbone": self.backbone is not None,
            "--backbone_pretrained": self.backbone_pretrained,
            "--backbone_weights": self.backbone_weights is not None,
            "--backbone_image_size": self.backbone_image_size is not None,
            "--num_channels": self.num_channels is not None,
        }
        if self.model_name_or_path:
            given_flags = [flag for flag, is_given in architecture_flags.items() if is_given]
            if given_flags:
                raise ValueError(
                    f"--model_name_or_path {self.model_name_or_path} continues a saved model with its own "
                    f"architecture and trained weights, so {', '.join(given_flags)} cannot apply; drop them, or "
                    "drop --model_name_or_path to start a new model."
                )
            return

        if self.backbone is None:
            # --num_channels applies to the dense network too.
            given_flags = [
                flag for flag, is_given in architecture_flags.items() if is_given and flag != "--num_channels"
            ]
            if self.freeze_backbone not in (None, "none"):
                given_flags.append("--freeze_backbone")
            if given_flags:
                raise ValueError(
                    f"{', '.join(given_flags)} only apply to a backbone; add --backbone NAME with a timm architecture, "
                    "for example --backbone resnet18, or drop them."
                )
        if self.hidden_sizes is None:
            self.hidden_sizes = [] if self.backbone is not None else [256, 64]
        if self.num_channels is None:
            self.num_channels = 1
        if self.backbone is not None and self.backbone_image_size is None:
            self.backbone_image_size = DEFAULT_BACKBONE_IMAGE_SIZE


@dataclass
class DataArguments:
    """Data source and split arguments."""

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
    # Off, as in the hand-written loop and in timm's train.py: the dense network trains as well without it, and
    # without clipping MnistTrainer skips the per-step gradient norm (see MnistTrainer._get_grad_norm).
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Clip gradients to this global norm; 0 turns clipping off. Default: 0."}
    )
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
    # Every trainable parameter takes part in each forward pass, so DDP needs no search for unused ones.
    # With False, DDP raises an error if that ever stops being true, instead of silently paying for a search.
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Let DDP look for parameters unused in forward. Default: false."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement. Default: never stop early."},
    )


class MnistTrainer(Trainer):
    """`Trainer` with the same results and less fixed work per step, which on a CPU is a large share of a step.

    For the run, `train` hides the objects that exist when it starts from Python's garbage collector. The full
    collection that accelerate runs at the start walked every loaded module, which took a tenth of an epoch of
    60,000 digits on 2 cores. `train` also caches accelerate's per-step check for the optional `lomo_optim`
    package (see `_lomo_check_once`). Without weight decay, the optimizer gets one parameter
    group with everything, where the decay split would give two identical ones. The FLOP estimate counts the
    parameters once, and without gradient clipping the gradient norm is computed only on the steps that log it.

    NOTE: a callback that logs on other steps gets those logs without `grad_norm`.
    """

    def train(self, *args, **kwargs):
        gc.freeze()
        try:
            with _lomo_check_once():
                return super().train(*args, **kwargs)
        finally:
            gc.unfreeze()

    def get_decay_parameter_names(self, model) -> list[str]:
        if self.args.weight_decay == 0:
            # Decay and no-decay groups would be identical, and one group means one optimizer kernel per step.
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer computes the gradient norm on every step, to log it, at about a tenth of a CPU step. Without
        # clipping nothing else reads it, so it is computed only on the steps that the default logging schedule
        # logs. Logging strategies other than "steps" keep the stock rule.
        if grad_norm is None and not self._step_logs_metrics(self.state.global_step + 1):
            return None
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _step_logs_metrics(self, step: int) -> bool:
        """Tell whether the default logging schedule logs the metrics of optimizer step `step` (from 1)."""
        if self.args.logging_strategy != IntervalStrategy.STEPS:
            return True
        if step == 1 and self.args.logging_first_step:
            return True
        return bool(self.state.logging_steps) and step % self.state.logging_steps == 0

    def floating_point_ops(self, inputs: dict) -> int:
        # The stock estimate is 6 x input elements x parameters. It counts the parameters by walking every
        # module on every step. The count is fixed during a run, so here it is taken once per model.
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        cached = getattr(self, "_parameter_count", None)
        if cached is None or cached[0] is not self.model:
            cached = self._parameter_count = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * cached[1]


@contextlib.contextmanager
def _lomo_check_once():
    """Cache, within the block, accelerate's optimizer-step check for the `lomo_optim` package.

    accelerate 1.x calls `is_lomo_available()` twice in every `AcceleratedOptimizer.step`, and each call searches
    `sys.path` for the package again: about 60 microseconds, 4% of a training step of the dense network on a
    2-core CPU. Whether the package can be imported does not change during a run, so the first result serves
    the whole block. The original function is put back on exit.
    """
    module = sys.modules.get("accelerate.optimizer")
    check = getattr(module, "is_lomo_available", None)
    if check is None:  # another accelerate layout: nothing to do
        yield
        return
    module.is_lomo_available = functools.cache(check)
    try:
        yield
    finally:
        module.is_lomo_available = check


def check_training_arguments(training_args: MnistTrainingArguments) -> None:
    """Reject settings that cannot work on this machine, before any data is loaded."""
    _check_mixed_precision(training_args)
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


def _check_mixed_precision(training_args: MnistTrainingArguments) -> None:
    # `accelerate launch --mixed_precision X` and Accelerate config files reach the script only through this
    # variable, which TrainingArguments reads into `mixed_precision` unless --fp16 or --bf16 overrides it.
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if training_args.fp16 and training_args.bf16:
        raise ValueError("--fp16 and --bf16 were both given; choose one mixed-precision mode.")
    flag = None
    if training_args.fp16:
        flag = "fp16"
    elif training_args.bf16:
        flag = "bf16"
    if flag and launcher not in ("no", flag):
        raise ValueError(
            f"--{flag} conflicts with mixed precision {launcher} from accelerate launch or its config file; "
            "choose one mode in one place."
        )
    precision = flag or launcher
    source = f"--{flag}" if flag else f"--mixed_precision {launcher} (from accelerate launch or its config file)"
    if precision == "fp16" and not torch.cuda.is_available():
        raise ValueError(
            f"{source} needs a CUDA GPU and none is available; drop it, or use bf16 for mixed precision on CPU."
        )
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{source}: this GPU does not support bfloat16; use fp16 instead.")
    if precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"{source}: hf-mnist supports mixed precision no, fp16 or bf16, not {precision}.")


def is_complete_checkpoint(folder: Path) -> bool:
    """Return whether `folder` is a checkpoint that Trainer finished writing.

    Trainer writes trainer_state.json last, after the weights, optimizer and RNG states, so a folder whose
    trainer_state.json and weights both read back was not cut short by a crash.
    """
    try:
        json.loads((folder / "trainer_state.json").read_text())
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            weights.keys()
    except (OSError, ValueError, SafetensorError):
        return False
    return True


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """Return the newest complete checkpoint-N folder in `output_dir`, warning about any half-written ones."""
    checkpoints = []
    for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and step.isdigit():
            checkpoints.append((int(step), folder))
    for _, folder in sorted(checkpoints, reverse=True):
        if is_complete_checkpoint(folder):
            return folder
        logger.warning(
            "Skipping %s: it was not completely written (a crash while saving?); resuming from an earlier "
            "checkpoint instead. Delete the folder once the run has resumed.",
            folder,
        )
    return None


def find_checkpoint(training_args: MnistTrainingArguments) -> str | None:
    """Return the checkpoint to resume from, and refuse to train over a previous run by accident."""
    output_dir = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    if resume not in (None, False, "", "false", "False"):
        if str(resume).lower() == "true":
            last = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
            if last is None:
                raise ValueError(
                    f"--resume_from_checkpoint true found no complete checkpoint-* folder in {output_dir}; drop "
                    "the flag to start a new run, or give the path of a checkpoint."
                )
            return str(last)
        if not Path(resume).is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume}: no such checkpoint folder; give a checkpoint-* folder "
                "of a previous run, or true for the latest one in --output_dir."
            )
        if not is_complete_checkpoint(Path(resume)):
            raise ValueError(
                f"--resume_from_checkpoint {resume} was not completely written (trainer_state.json or "
                "model.safetensors is missing or unreadable); give an earlier checkpoint, or true for the "
                "latest complete one."
            )
        return str(resume)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not training_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir} already holds files from a previous run; resume it with "
            "--resume_from_checkpoint true, choose another --output_dir, or pass --overwrite_output_dir."
        )
    return None


def build_model(model_args: ModelArguments, data_args: DataArguments) -> MnistForImageClassification:
    """Create the network to train: a saved model, or a new one with pretrained backbone weights if requested.

    Every backbone problem (an unknown name, an input size it cannot take, weights that do not fit or cannot
    be downloaded) raises here, before training starts.
    """
    if model_args.model_name_or_path:
        overrides = {} if model_args.freeze_backbone is None else {"backbone_freeze": model_args.freeze_backbone}
        return MnistForImageClassification.from_pretrained(model_args.model_name_or_path, **overrides)

    backbone_settings = {}
    if model_args.backbone is not None:
        backbone_settings = {
            "backbone": model_args.backbone,
            "image_size": model_args.backbone_image_size,
            "backbone_freeze": model_args.freeze_backbone or "none",
        }
    config = MnistConfig(
        hidden_sizes=model_args.hidden_sizes,
        hidden_act=model_args.hidden_act,
        dropout=model_args.dropout,
        num_channels=model_args.num_channels,
        **backbone_settings,
    )
    model = MnistForImageClassification(config)
    check_backbone_input_size(model)
    if model_args.backbone_pretrained:
        load_pretrained_backbone(model, model_args.backbone_weights)
    return model


def build_image_processor(config: MnistConfig) -> MnistImageProcessor:
    """Create the image processor for a model with `config`: its input size, channels and normalization."""
    return MnistImageProcessor(
        size={"height": config.image_size, "width": config.image_size},
        num_channels=config.num_channels,
        **backbone_image_settings(config),
    )


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MnistTrainingArguments,
    callbacks: list | None = None,
) -> dict:
    """Train, validate every epoch, keep the best checkpoint, test, and save everything to output_dir.

    `callbacks` are extra `TrainerCallback`s. Returns the combined train, validation and test metrics, as also
    written to `all_results.json`.
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
    tensors = {name: DigitTensors(split, image_processor) for name, split in splits.items()}
    sizes = split_summary(splits)
    logger.info("Digits from %s, split sizes: %s", data_args.dataset_name, sizes)
    logger.info("Model: %s, %d parameters", _describe(model), model.num_parameters())
    logger.info(
        "Batch size %d per device × %d accumulation steps × %d processes = %d examples per optimizer step",
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
        training_args.world_size,
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size,
    )

    callbacks = list(callbacks or [])
    if training_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(training_args.early_stopping_patience))
    trainer = MnistTrainer(
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
    metrics["train_loss"] = whole_run_train_loss(trainer.state.log_history, metrics["train_loss"])
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
    """Return where the digits came from, with no local path: `sample`, a Hub id, or only the kind of local source."""
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
        "architecture": _describe(model),
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


def whole_run_train_loss(log_history: list[dict], fallback: float) -> float:
    """Mean training loss over every optimizer step of the run, from the logged losses.

    Trainer's own `train_loss` averages only the steps of the current session, so after a resume it would
    differ from an uninterrupted run. Each logged `loss` is the mean over the steps since the previous log,
    so weighting it by that step count gives the same figure however often the run was resumed. Steps after
    the last log are not covered; `fallback` is used when nothing was logged.
    """
    total = 0.0
    steps = 0
    previous_step = 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            span = entry["step"] - previous_step
            total += entry["loss"] * span
            steps += span
            previous_step = entry["step"]
    return total / steps if steps else fallback


def _describe(model: MnistForImageClassification) -> str:
    config = model.config
    # The dense head reads the flattened image, or the backbone's pooled features.
    if model.backbone is None:
        in_features = config.num_channels * config.image_size**2
    else:
        in_features = model.backbone.num_features
    widths = [in_features, *config.hidden_sizes, config.num_labels]
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
    "MnistTrainer",
    "MnistTrainingArguments",
    "check_training_arguments",
    "find_checkpoint",
    "run_training",
]
