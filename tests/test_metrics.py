"""The offline digit metric against hand-computed values."""

import numpy as np
import pytest

from hf_mnist.metrics import compute_digit_metrics


def test_perfect_predictions_score_one():
    labels = np.arange(10).repeat(3)
    metrics = compute_digit_metrics(labels, labels)
    assert metrics["accuracy"] == 1.0
    assert metrics["f1_macro"] == 1.0
    assert metrics["num_samples"] == 30


def test_confusion_matrix_counts_true_by_predicted():
    references = [0, 0, 1, 2]
    predictions = [0, 1, 1, 1]
    matrix = np.array(compute_digit_metrics(predictions, references)["confusion_matrix"])
    assert matrix[0, 0] == 1
    assert matrix[0, 1] == 1
    assert matrix[1, 1] == 1
    assert matrix[2, 1] == 1
    assert matrix.sum() == 4


def test_macro_f1_and_per_class_accuracy_by_hand():
    references = [0, 0, 1, 1]
    predictions = [0, 1, 1, 1]
    metrics = compute_digit_metrics(predictions, references)
    # Class 0: precision 1, recall 0.5, F1 2/3. Class 1: precision 2/3, recall 1, F1 0.8.
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert metrics["per_class_accuracy"][:2] == [0.5, 1.0]
    assert metrics["accuracy"] == 0.75


def test_rejects_class_id_out_of_range():
    with pytest.raises(ValueError, match=r"predictions contain class ids outside \[0, 10\): min 0, max 12"):
        compute_digit_metrics([0, 12], [0, 1])


def test_rejects_empty_predictions():
    with pytest.raises(ValueError, match="No predictions to score: the evaluated split is empty"):
        compute_digit_metrics([], [])
