"""Classification metrics for digits, computed with `evaluate` from a module defined here.

`evaluate.load("accuracy")` would fetch a metric script from the Hub. This module defines the metric locally
instead, so evaluation works offline and with an empty cache.
"""

import datasets
import evaluate
import numpy as np

NUM_DIGITS = 10


class DigitClassificationMetric(evaluate.Metric):
    """Accuracy, macro-F1, per-class accuracy and the confusion matrix of single-label predictions."""

    def __init__(self, num_classes: int = NUM_DIGITS, **kwargs):
        # In memory: the predictions are small, and nothing is written to the metrics cache.
        kwargs.setdefault("keep_in_memory", True)
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, macro-averaged F1, per-class accuracy and confusion matrix.",
            citation="",
            inputs_description=(
                "predictions: predicted class ids; references: true class ids; both integers in [0, num_classes)."
            ),
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references) -> dict:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise ValueError("No predictions to score: the evaluated split is empty.")
        for name, values in (("predictions", predictions), ("references", references)):
            if values.min() < 0 or values.max() >= self.num_classes:
                raise ValueError(
                    f"{name} contain class ids outside [0, {self.num_classes}): min {values.min()}, max {values.max()}."
                )

        # confusion[i, j] counts examples of true class i predicted as class j.
        confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(confusion, (references, predictions), 1)
        true_positives = np.diag(confusion).astype(np.float64)
        support = confusion.sum(axis=1)
        predicted = confusion.sum(axis=0)

        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, true_positives / support, 0.0)
            precision = np.where(predicted > 0, true_positives / predicted, 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        # Macro-F1 averages over the classes present in the references, as scikit-learn does with
        # labels=None; an absent class would otherwise count as a zero.
        present = (support > 0) | (predicted > 0)

        return {
            "accuracy": float(true_positives.sum() / predictions.size),
            "f1_macro": float(f1[present].mean()),
            "per_class_accuracy": [float(value) for value in recall],
            "confusion_matrix": confusion.tolist(),
            "num_samples": int(predictions.size),
        }


def compute_digit_metrics(predictions, references) -> dict:
    """Score class-id predictions against references with `DigitClassificationMetric`."""
    return DigitClassificationMetric().compute(predictions=predictions, references=references)


def trainer_compute_metrics(eval_prediction) -> dict[str, float]:
    """Scalar metrics for `Trainer(compute_metrics=...)`, from its logits and labels."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    metrics = compute_digit_metrics(np.argmax(logits, axis=-1), labels)
    return {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"]}


__all__ = ["DigitClassificationMetric", "compute_digit_metrics", "trainer_compute_metrics"]
