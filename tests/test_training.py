"""End to end on real digits: train on the embedded sample, then evaluate, predict and use pipeline()."""

import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_mnist import MnistForImageClassification, MnistImageProcessor
from hf_mnist.data import load_digits

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_EPOCHS = 6
MIN_HELD_OUT_ACCURACY = 0.90


def run_script(script: str, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("run") / "mnist-mlp"
    run_script("train.py", "--output_dir", str(output_dir), "--num_train_epochs", str(TRAIN_EPOCHS))
    return output_dir


@pytest.fixture(scope="module")
def test_digits():
    return load_digits("sample")["test"]


def test_training_beats_accuracy_floor(trained_model):
    results = json.loads((trained_model / "all_results.json").read_text())
    assert results["test_accuracy"] >= MIN_HELD_OUT_ACCURACY
    assert results["validation_accuracy"] >= MIN_HELD_OUT_ACCURACY


def test_output_folder_contents(trained_model):
    names = {path.name for path in trained_model.iterdir()}
    expected = {
        "config.json",
        "model.safetensors",
        "configuration_mnist.py",
        "modeling_mnist.py",
        "image_processing_mnist.py",
        "pipeline_mnist.py",
        "preprocessor_config.json",
        "all_results.json",
        "trainer_state.json",
        "evaluation_details.json",
    }
    assert expected <= names
    assert "pytorch_model.bin" not in names


def test_all_results_has_every_stage(trained_model):
    results = json.loads((trained_model / "all_results.json").read_text())
    for key in ("train_loss", "validation_accuracy", "validation_f1_macro", "test_accuracy", "test_f1_macro"):
        assert key in results, key


def test_best_checkpoint_was_kept(trained_model):
    state = json.loads((trained_model / "trainer_state.json").read_text())
    validation = [entry["eval_accuracy"] for entry in state["log_history"] if "eval_accuracy" in entry]
    results = json.loads((trained_model / "all_results.json").read_text())
    assert len(validation) == TRAIN_EPOCHS
    assert results["validation_accuracy"] == pytest.approx(max(validation))


def test_confusion_matrix_covers_test_split(trained_model, test_digits):
    details = json.loads((trained_model / "evaluation_details.json").read_text())
    matrix = np.array(details["test"]["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == len(test_digits)


PIPELINE_WITHOUT_HF_MNIST = """
import json, sys
sys.modules["hf_mnist"] = None  # any import of hf_mnist now raises ImportError
from PIL import Image
from transformers import pipeline
model_dir, image_paths = sys.argv[1], sys.argv[2:]
try:
    import hf_mnist
    raise SystemExit("hf_mnist is importable; the test would prove nothing")
except ImportError:
    pass
classifier = pipeline("image-classification", model=model_dir, trust_remote_code=True)
results = classifier([Image.open(path) for path in image_paths], batch_size=8)
print(json.dumps([result[0]["label"] for result in results]))
"""


def test_pipeline_without_hf_mnist_matches_forward(trained_model, test_digits, tmp_path):
    images = [test_digits[index]["image"] for index in range(40)]
    paths = []
    for index, image in enumerate(images):
        path = tmp_path / f"digit_{index}.png"
        image.save(path)
        paths.append(str(path))

    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_WITHOUT_HF_MNIST, str(trained_model), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    pipeline_labels = json.loads(result.stdout.strip().splitlines()[-1])

    model = MnistForImageClassification.from_pretrained(trained_model).eval()
    processor = MnistImageProcessor.from_pretrained(trained_model)
    with torch.inference_mode():
        logits = model(**processor(images, return_tensors="pt")).logits
    forward_labels = [str(label) for label in logits.argmax(-1).tolist()]
    assert set(pipeline_labels) <= {str(digit) for digit in range(10)}
    assert pipeline_labels == forward_labels


def test_evaluate_script_reproduces_test_accuracy(trained_model, tmp_path):
    output_json = tmp_path / "metrics.json"
    run_script(
        "evaluate_model.py",
        "--model",
        str(trained_model),
        "--dataset_name",
        "sample",
        "--split",
        "test",
        "--output_json",
        str(output_json),
    )
    metrics = json.loads(output_json.read_text())
    results = json.loads((trained_model / "all_results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(results["test_accuracy"])
    assert metrics["num_samples"] == results["test_samples"]


def test_predict_folder_writes_labels(trained_model, test_digits, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(12):
        test_digits[index]["image"].save(folder / f"{index:02d}.png")
    output = tmp_path / "predictions.csv"
    run_script("predict.py", "--model", str(trained_model), "--inputs", str(folder), "--output_csv", str(output))
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 12
    assert [Path(row["file"]).name for row in rows] == [f"{index:02d}.png" for index in range(12)]
    correct = sum(row["label"] == str(test_digits[index]["label"]) for index, row in enumerate(rows))
    assert correct >= 9


def test_predict_kaggle_csv_writes_submission(trained_model, test_digits, tmp_path):
    test_csv = tmp_path / "test.csv"
    with test_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"pixel{k}" for k in range(784)])
        for index in range(25):
            writer.writerow(np.asarray(test_digits[index]["image"]).reshape(-1).tolist())
    output = tmp_path / "submission.csv"
    run_script("predict.py", "--model", str(trained_model), "--inputs", str(test_csv), "--output_csv", str(output))
    rows = list(csv.reader(output.open()))
    assert rows[0] == ["ImageId", "Label"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, 26))
    assert all(row[1] in {str(digit) for digit in range(10)} for row in rows[1:])


def train_main(*args: str) -> None:
    """Run scripts/train.py's main() in this process, for errors that stop it before any data loads."""
    namespace = runpy.run_path(str(REPO_ROOT / "scripts" / "train.py"))
    namespace["main"](list(args))


def test_fp16_without_cuda_fails_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --fp16 is valid")
    with pytest.raises(ValueError, match="--fp16 needs a CUDA GPU and none is available"):
        train_main("--output_dir", str(tmp_path / "out"), "--fp16")
    assert not (tmp_path / "out").exists()


def test_train_script_reports_error_on_stderr(tmp_path):
    # One real subprocess, to check what a user sees: the message and a non-zero exit status.
    result = run_script("train.py", "--output_dir", str(tmp_path / "out"), "--fp16", check=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --fp16 is valid")
    assert result.returncode != 0
    assert "--fp16 needs a CUDA GPU and none is available" in result.stderr


def test_nonempty_output_dir_is_refused(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds files from a previous run"):
        train_main("--output_dir", str(output_dir))
    assert (output_dir / "config.json").read_text() == "{}"


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint true found no complete checkpoint-\* folder"):
        train_main("--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", "true")


def test_config_file_sets_arguments(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so fp16 from the file would start a real run")
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nfp16: true\n")
    with pytest.raises(ValueError, match="--fp16 needs a CUDA GPU"):
        train_main(str(config))


def test_scripts_need_no_network_variables():
    # Guard against a test run that silently reaches a real Hub: the suite points HF_ENDPOINT at loopback.
    endpoint = os.environ.get("HF_ENDPOINT", "")
    assert endpoint.startswith("http://127.0.0.1")
