"""The model card (README.md) and its figures for a Hub repo, built from the files of a training run.

The card body comes from the Jinja template `model_card_template.md`, a copy of the top-level
`model_card.md` that ships inside the package so that installed copies of hf-mnist find it too. The
top-level file is the one to edit, and a test checks that the two are identical.

Everything in the card comes from the output folder of `scripts/train.py`: `all_results.json`,
`run_info.json`, `evaluation_details.json`, `trainer_state.json`, `config.json` and
`preprocessor_config.json`. Local dataset paths never enter the card, because `run_info.json` records
only the kind of a local source. The card and the figures contain no timestamps, so the same run always
gives the same bytes and a repeated push changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

TEMPLATE_PATH: Path = Path(__file__).parent / "model_card_template.md"

LICENSE = "apache-2.0"
TAGS = ["hf-mnist", "mnist", "image-classification", "custom_code"]
CONFUSION_MATRIX_IMAGE = "images/confusion_matrix.png"
TRAINING_CURVE_IMAGE = "images/training_curve.png"

# The files of a training run that the card is built from.
CARD_SOURCE_FILES = (
    "all_results.json",
    "run_info.json",
    "evaluation_details.json",
    "trainer_state.json",
    "config.json",
    "preprocessor_config.json",
)

SAMPLE_DATASET_NAME = "MNIST (5,000-digit sample)"
SAMPLE_DATASET_TYPE = "mnist-sample"
LOCAL_DATASET_NAME = "Local digit dataset"
LOCAL_DATASET_TYPE = "local-digits"

# Descriptions of local sources, by the `format` that `run_info.json` records for them.
_LOCAL_FORMATS = {
    "csv": "a Kaggle-style CSV file",
    "gz": "a compressed CSV or IDX file",
    "parquet": "a parquet file",
    "folder": "a local folder of images, IDX, parquet or saved dataset files",
}

_HELD_OUT_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class TrainingRun:
    """The result files of one training run, parsed."""

    results: dict
    run_info: dict
    evaluation_details: dict
    trainer_state: dict
    config: dict
    preprocessor: dict

    @property
    def reported_split(self) -> str | None:
        """The split whose scores go into `model-index`: test when it was scored, else validation."""
        for split in ("test", "validation"):
            if f"{split}_accuracy" in self.results:
                return split
        return None


def load_training_run(output_dir: str | os.PathLike) -> TrainingRun:
    """Read the result files of a training run from its output folder.

    Raises:
        FileNotFoundError: A file of `CARD_SOURCE_FILES` is missing.
        ValueError: A file is not valid JSON.
    """
    folder = Path(output_dir)
    contents = {}
    for name in CARD_SOURCE_FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the model card is built from the files that a finished "
                f"`python scripts/train.py --output_dir {folder}` writes ({', '.join(CARD_SOURCE_FILES)})."
            )
        try:
            contents[name] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path} is not valid JSON ({err}). Train again to rewrite it.") from err
    return TrainingRun(
        results=contents["all_results.json"],
        run_info=contents["run_info.json"],
        evaluation_details=contents["evaluation_details.json"],
        trainer_state=contents["trainer_state.json"],
        config=contents["config.json"],
        preprocessor=contents["preprocessor_config.json"],
    )


# --- Metadata --------------------------------------------------------------------------------------


def build_card_data(run: TrainingRun, repo_id: str) -> ModelCardData:
    """Build the card metadata: licence, library, task, tags, metrics, Hub dataset and `model-index`."""
    model_name = repo_id.split("/")[-1]
    dataset = run.run_info.get("dataset") or {}
    hub_dataset = dataset.get("hub_id")

    eval_results = None
    split = run.reported_split
    if split is None:
        logger.warning("all_results.json has no validation or test accuracy, so the card has no model-index.")
    else:
        dataset_name, dataset_type = _model_index_dataset(dataset)
        common = {
            "task_type": "image-classification",
            "task_name": "Image Classification",
            "dataset_type": dataset_type,
            "dataset_name": dataset_name,
            "dataset_split": split,
        }
        eval_results = [
            EvalResult(
                **common,
                metric_type="accuracy",
                metric_name=f"{split.capitalize()} accuracy",
                metric_value=run.results[f"{split}_accuracy"],
            )
        ]
        if f"{split}_f1_macro" in run.results:
            eval_results.append(
                EvalResult(
                    **common,
                    metric_type="f1",
                    metric_name=f"{split.capitalize()} macro-F1",
                    metric_value=run.results[f"{split}_f1_macro"],
                    metric_args={"average": "macro"},
                )
            )

    return ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(TAGS),
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results,
    )


def _model_index_dataset(dataset: dict) -> tuple[str, str]:
    """Return the `model-index` dataset name and type: the Hub id, or a description without any path."""
    if dataset.get("hub_id"):
        return dataset["hub_id"], dataset["hub_id"]
    if dataset.get("source") == "sample":
        return SAMPLE_DATASET_NAME, SAMPLE_DATASET_TYPE
    return LOCAL_DATASET_NAME, LOCAL_DATASET_TYPE


# --- Body ------------------------------------------------------------------------------------------


def render_model_card(output_dir: str | os.PathLike, repo_id: str) -> ModelCard:
    """Render the README.md of `repo_id` from the training run in `output_dir` and the card template.

    The card links the figures that `render_card_images` writes, at the paths that `card_image_paths` returns.
    """
    run = load_training_run(output_dir)
    card = ModelCard.from_template(
        build_card_data(run, repo_id), template_path=str(TEMPLATE_PATH), **_template_fields(run, repo_id)
    )
    # The template's optional sections leave runs of blank lines, and jinja2 drops its final newline.
    card.text = re.sub(r"\n{3,}", "\n\n", card.text).rstrip("\n") + "\n"
    return card


def _template_fields(run: TrainingRun, repo_id: str) -> dict:
    info = run.run_info
    config = run.config
    return {
        "model_name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "architecture": info.get("architecture", "unknown"),
        "backbone": config.get("backbone"),
        "backbone_pretrained": config.get("backbone_pretrained", False),
        "hidden_act": config.get("hidden_act", "unknown"),
        "dropout": config.get("dropout") or 0,
        "num_parameters": f"{info['num_parameters']:,}" if "num_parameters" in info else "unknown",
        "input_description": _input_description(run),
        "processor_note": _processor_note(run.preprocessor),
        "data_description": _data_description(info.get("dataset") or {}),
        "splits": [{"name": name, "examples": f"{count:,}"} for name, count in (info.get("split_sizes") or {}).items()],
        "best_checkpoint": _best_checkpoint(run),
        "hyperparameters": _hyperparameters(run),
        "results": _results(run),
        "train_loss": _format_score(run.results["train_loss"]) if "train_loss" in run.results else None,
        "reported": _reported(run),
        "per_class": _per_class(run),
        "confusion_matrix": _confusion_matrix_fields(run),
        "training_curve": _training_curve_fields(run),
        "framework_versions": [
            {"name": name.replace("_", "-"), "version": version}
            for name, version in (info.get("framework_versions") or {}).items()
        ],
    }


def _input_description(run: TrainingRun) -> str:
    size = run.config.get("image_size", 28)
    channels = run.config.get("num_channels", 1)
    kind = "grey image" if channels == 1 else f"{channels}-channel image (the grey channel repeated)"
    mean = _format_list(run.preprocessor.get("image_mean", []))
    std = _format_list(run.preprocessor.get("image_std", []))
    return (
        f"`pixel_values` of shape (batch, {channels}, {size}, {size}): a {size}×{size} {kind} with intensities "
        f"scaled to [0, 1], then normalised with mean {mean} and standard deviation {std}. The bundled image "
        "processor prepares them from Pillow images, numpy arrays, torch tensors or image files."
    )


def _processor_note(preprocessor: dict) -> str:
    # NOTE: a setting missing from preprocessor_config.json takes the default of MnistImageProcessor, which
    # brings images into MNIST form (`do_mnist_normalize` true, `invert` "auto").
    if not preprocessor.get("do_mnist_normalize", True):
        return (
            "The bundled image processor only converts, resizes and normalises images, so other images must "
            "be brought into that form first."
        )
    steps = []
    invert = preprocessor.get("invert", "auto")
    if invert == "auto":
        steps.append("inverts digits that are darker than their background")
    elif invert == "always":
        steps.append("inverts every image")
    if preprocessor.get("do_crop_to_digit", True):
        steps.append("crops to the digit")
    if preprocessor.get("do_scale_digit", True):
        steps.append(f"scales it into a {preprocessor.get('digit_box_size', 20)}-pixel box")
    if preprocessor.get("do_center_of_mass", True):
        steps.append("centres it by its centre of mass")
    else:
        steps.append("centres it in the frame")
    listed = ", ".join(steps[:-1]) + f" and {steps[-1]}" if len(steps) > 1 else steps[0]
    return (
        f"The bundled image processor brings other images close to that form: it {listed}. It does not "
        "separate several digits in one image."
    )


def _data_description(dataset: dict) -> str:
    source = dataset.get("source")
    if source == "sample":
        return (
            "The embedded MNIST sample of hf-mnist: 5,000 real MNIST digits, 500 of each class, carved into "
            "the splits below with the same share of every class in each split. MNIST is the work of Yann "
            "LeCun, Corinna Cortes and Christopher J.C. Burges."
        )
    if dataset.get("hub_id"):
        return f"The Hub dataset `{dataset['hub_id']}`, in the splits below."
    kind = _LOCAL_FORMATS.get(dataset.get("format"), "local data files")
    return f"Digits from {kind} on the training machine, which is not published, in the splits below."


def _best_checkpoint(run: TrainingRun) -> dict | None:
    hyperparameters = run.run_info.get("hyperparameters") or {}
    state = run.trainer_state
    if not hyperparameters.get("load_best_model_at_end") or state.get("best_global_step") is None:
        return None
    step = state["best_global_step"]
    history = state.get("log_history", [])
    epochs = [entry["epoch"] for entry in history if entry.get("step") == step and "epoch" in entry]
    return {
        "step": step,
        "epoch": _format_epoch(epochs[0]) if epochs else "unknown",
        "metric": hyperparameters.get("metric_for_best_model") or "loss",
        "value": _format_score(state["best_metric"]),
    }


def _hyperparameters(run: TrainingRun) -> list[dict]:
    values = run.run_info.get("hyperparameters") or {}
    state = run.trainer_state
    rows = [
        ("epochs", _epochs_text(values.get("num_train_epochs"), state.get("epoch"))),
        ("optimizer steps", state.get("global_step")),
        ("optimizer", values.get("optimizer")),
        ("learning rate", _format_number(values.get("learning_rate"))),
        ("learning-rate schedule", values.get("lr_scheduler_type")),
        ("warm-up steps", values.get("warmup_steps")),
        ("weight decay", _format_number(values.get("weight_decay"))),
        ("batch size per device", values.get("per_device_train_batch_size")),
        ("gradient accumulation steps", values.get("gradient_accumulation_steps")),
        ("processes", values.get("num_processes")),
        ("effective batch size", values.get("effective_batch_size")),
        ("mixed precision", values.get("mixed_precision")),
        ("seed", values.get("seed")),
    ]
    return [{"name": name, "value": value} for name, value in rows if value is not None]


def _epochs_text(planned: float | None, completed: float | None) -> str | None:
    if planned is None:
        return None
    if completed is None or abs(completed - planned) < 1e-9:
        return _format_epoch(planned)
    return f"{_format_epoch(completed)} of {_format_epoch(planned)} planned (stopped early)"


def _results(run: TrainingRun) -> list[dict]:
    rows = []
    for split in _HELD_OUT_SPLITS:
        if f"{split}_accuracy" not in run.results:
            continue
        rows.append(
            {
                "split": split,
                "examples": _format_count(run.results.get(f"{split}_samples")),
                "accuracy": _format_score(run.results[f"{split}_accuracy"]),
                "f1": _format_score(run.results.get(f"{split}_f1_macro")),
                "loss": _format_score(run.results.get(f"{split}_loss")),
            }
        )
    return rows


def _reported(run: TrainingRun) -> dict | None:
    split = run.reported_split
    if split is None:
        return None
    examples = run.results.get(f"{split}_samples")
    return {
        "split": split,
        "examples": _format_count(examples),
        "accuracy": _format_score(run.results[f"{split}_accuracy"]),
        "step": f"{1 / examples:.4f}" if examples else "an unknown amount",
    }


def _per_class(run: TrainingRun) -> dict | None:
    splits = [split for split in _HELD_OUT_SPLITS if "per_class_accuracy" in run.evaluation_details.get(split, {})]
    if not splits:
        return None
    columns = [run.evaluation_details[split]["per_class_accuracy"] for split in splits]
    rows = [
        {"digit": digit, "accuracies": [_format_score(column[digit]) for column in columns]}
        for digit in range(len(columns[0]))
    ]
    return {"splits": splits, "rows": rows}


# --- Figures ---------------------------------------------------------------------------------------


def card_image_paths(output_dir: str | os.PathLike) -> list[str]:
    """Return the repo paths of the figures that the card of this run shows."""
    run = load_training_run(output_dir)
    paths = []
    if _confusion_matrix_split(run) is not None:
        paths.append(CONFUSION_MATRIX_IMAGE)
    if _training_curve_points(run) != ([], []):
        paths.append(TRAINING_CURVE_IMAGE)
    return paths


def render_card_images(output_dir: str | os.PathLike, target_dir: str | os.PathLike) -> list[Path]:
    """Draw the card's figures as PNG files under `target_dir`, at their repo paths, and return the files.

    Nothing is written to `output_dir`. Matplotlib draws with its Agg canvas and no pyplot state, and the
    PNG files carry no software or time metadata, so the same run always gives the same bytes.
    """
    run = load_training_run(output_dir)
    target = Path(target_dir)
    written = []
    split = _confusion_matrix_split(run)
    if split is not None:
        written.append(_save_figure(_draw_confusion_matrix(run, split), target / CONFUSION_MATRIX_IMAGE))
    losses, accuracies = _training_curve_points(run)
    if losses or accuracies:
        written.append(_save_figure(_draw_training_curve(losses, accuracies), target / TRAINING_CURVE_IMAGE))
    return written


def _confusion_matrix_split(run: TrainingRun) -> str | None:
    split = run.reported_split
    if split is not None and "confusion_matrix" in run.evaluation_details.get(split, {}):
        return split
    return None


def _confusion_matrix_fields(run: TrainingRun) -> dict | None:
    split = _confusion_matrix_split(run)
    if split is None:
        return None
    matrix = run.evaluation_details[split]["confusion_matrix"]
    return {"split": split, "path": CONFUSION_MATRIX_IMAGE, "examples": f"{sum(map(sum, matrix)):,}"}


def _training_curve_points(run: TrainingRun) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Return (epoch, training loss) and (epoch, validation accuracy) pairs from the Trainer's log history."""
    history = run.trainer_state.get("log_history", [])
    losses = [(entry["epoch"], entry["loss"]) for entry in history if "loss" in entry and "epoch" in entry]
    accuracies = [
        (entry["epoch"], entry["eval_accuracy"]) for entry in history if "eval_accuracy" in entry and "epoch" in entry
    ]
    return losses, accuracies


def _training_curve_fields(run: TrainingRun) -> dict | None:
    if _training_curve_points(run) == ([], []):
        return None
    return {"path": TRAINING_CURVE_IMAGE, "logging_steps": _format_number(run.trainer_state.get("logging_steps"))}


def _draw_confusion_matrix(run: TrainingRun, split: str):
    from matplotlib.figure import Figure

    matrix = run.evaluation_details[split]["confusion_matrix"]
    labels = [str(digit) for digit in range(len(matrix))]
    largest = max(max(row) for row in matrix) or 1

    figure = Figure(figsize=(5.2, 4.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=largest)
    figure.colorbar(image, ax=axes, label="digits")
    # One count per cell, white on the dark cells.
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            colour = "white" if count > largest / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(f"Confusion matrix, {split} split ({sum(map(sum, matrix)):,} digits)")
    return figure


def _draw_training_curve(losses: list[tuple[float, float]], accuracies: list[tuple[float, float]]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8.0, 3.2), dpi=100, layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    if losses:
        loss_axes.plot(*zip(*losses, strict=True), marker="o", color="tab:blue")
    loss_axes.set_title("training loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    if accuracies:
        accuracy_axes.plot(*zip(*accuracies, strict=True), marker="o", color="tab:orange")
    accuracy_axes.set_title("validation accuracy")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    return figure


def _save_figure(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Matplotlib writes a Software entry into PNG files by default; None leaves it out.
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


# --- Formatting ------------------------------------------------------------------------------------


def _format_score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _format_count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _format_number(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def _format_epoch(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def _format_list(values: list) -> str:
    return ", ".join(f"{value:g}" for value in values) or "unknown"


__all__ = [
    "CARD_SOURCE_FILES",
    "TEMPLATE_PATH",
    "TrainingRun",
    "build_card_data",
    "card_image_paths",
    "load_training_run",
    "render_card_images",
    "render_model_card",
]
