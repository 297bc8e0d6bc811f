"""Multi-process training and evaluation through the real `accelerate launch`, resume and reproducibility.

On a machine without CUDA, `accelerate launch --multi_gpu --num_processes N` starts N CPU processes that
train together over gloo, so these tests run anywhere. GPU-only behaviour is at the end and skips without
CUDA; `scripts/gpu_check.sh` runs the same checks on a GPU machine.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_mnist import MnistForImageClassification, MnistImageProcessor
from hf_mnist.data import load_digits
from hf_mnist.train import is_complete_checkpoint, last_complete_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "scripts" / "train.py"
EVALUATE = REPO_ROOT / "scripts" / "evaluate_model.py"
FAULTY_TRAIN = REPO_ROOT / "tests" / "scripts" / "train_with_faults.py"

# The validation split of the sample has 500 digits: with 64 per process it divides by neither 2 × 64
# nor 3 × 64, so the last batch of each process is ragged.
EVAL_BATCH = "64"
# A short run with gradient accumulation, a checkpoint every 4 optimizer steps and a loss logged every step.
RESUMABLE_RUN = [
    "--max_train_samples", "960",
    "--num_train_epochs", "2",
    "--per_device_train_batch_size", "32",
    "--gradient_accumulation_steps", "3",
    "--eval_strategy", "steps",
    "--save_strategy", "steps",
    "--eval_steps", "4",
    "--save_steps", "4",
    "--logging_steps", "1",
    "--save_total_limit", "10",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(script: Path, *args: str, num_processes: int, mixed_precision: str = "no", env=None, timeout=300):
    """Run `script` under `accelerate launch` with `num_processes` processes and return the finished process."""
    command = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu" if num_processes > 1 else "--cpu",
        "--num_processes", str(num_processes),
        "--num_machines", "1",
        "--mixed_precision", mixed_precision,
        "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(script),
        *args,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env={**os.environ, **(env or {})}
    )


def run_python(script: Path, *args: str, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


def succeeded(result: subprocess.CompletedProcess) -> bool:
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-5000:], sep="\n")
    return result.returncode == 0


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def step_losses(output_dir: Path) -> list[float]:
    history = read_json(output_dir / "trainer_state.json")["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def same_weights(first: Path, second: Path) -> bool:
    a = load_file(first / "model.safetensors")
    b = load_file(second / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.fixture(scope="module")
def three_process_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp3") / "model"
    result = launch(
        TRAIN,
        "--output_dir", str(output_dir),
        "--max_train_samples", "2000",
        "--num_train_epochs", "2",
        "--per_device_eval_batch_size", EVAL_BATCH,
        num_processes=3,
    )  # fmt: skip
    return output_dir, result


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted single-process run that the resume and reproducibility tests compare against."""
    output_dir = tmp_path_factory.mktemp("reference") / "model"
    result = run_python(FAULTY_TRAIN, "--output_dir", str(output_dir), *RESUMABLE_RUN)
    assert succeeded(result)
    return output_dir


def test_three_processes_train_and_exit_cleanly(three_process_run):
    output_dir, result = three_process_run
    assert succeeded(result)
    assert (output_dir / "model.safetensors").is_file()


def test_only_main_process_reports(three_process_run):
    _, result = three_process_run
    assert result.stdout.count("Done. Accuracy on") == 1
    assert result.stdout.count("***** test metrics *****") == 1


def test_run_info_counts_every_process(three_process_run):
    output_dir, _ = three_process_run
    hyperparameters = read_json(output_dir / "run_info.json")["hyperparameters"]
    assert hyperparameters["num_processes"] == 3
    assert hyperparameters["effective_batch_size"] == 64 * 3


def test_distributed_validation_scores_every_digit_once(three_process_run):
    output_dir, _ = three_process_run
    details = read_json(output_dir / "evaluation_details.json")["validation"]
    assert details["num_samples"] == 500
    results = read_json(output_dir / "all_results.json")
    assert results["validation_accuracy"] == details["accuracy"]


def single_process_accuracy(model_dir: Path, split: str) -> tuple[float, int]:
    """Score `split` of the sample in this process with a plain forward pass, as the reference figure."""
    model = MnistForImageClassification.from_pretrained(model_dir).eval()
    processor = MnistImageProcessor.from_pretrained(model_dir)
    digits = load_digits("sample")[split]
    with torch.inference_mode():
        logits = model(**processor(list(digits["image"]), return_tensors="pt")).logits
    labels = torch.tensor(digits["label"])
    correct = int((logits.argmax(-1) == labels).sum())
    return correct / len(labels), len(labels)


def test_evaluate_script_under_two_processes_matches_single(three_process_run, tmp_path):
    output_dir, _ = three_process_run
    metrics_json = tmp_path / "metrics.json"
    result = launch(
        EVALUATE,
        "--model", str(output_dir),
        "--split", "validation",
        "--per_device_eval_batch_size", EVAL_BATCH,
        "--output_json", str(metrics_json),
        num_processes=2,
    )  # fmt: skip
    assert succeeded(result)
    output = result.stdout + result.stderr
    assert output.count("on sample/validation: accuracy") == 1  # only the main process reports
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in output
    metrics = read_json(metrics_json)
    accuracy, count = single_process_accuracy(output_dir, "validation")
    assert metrics["num_samples"] == count
    assert metrics["accuracy"] == accuracy
    assert metrics["accuracy"] == read_json(output_dir / "all_results.json")["validation_accuracy"]


def test_two_processes_train_in_bf16_from_config_file(tmp_path):
    # configs/cpu_ddp.yaml with bf16: the precision must reach the script without any flag of its own.
    config = yaml.safe_load((REPO_ROOT / "configs" / "cpu_ddp.yaml").read_text())
    config["mixed_precision"] = "bf16"
    config_file = tmp_path / "bf16_cpu.yaml"
    config_file.write_text(yaml.safe_dump(config))
    output_dir = tmp_path / "model"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch",
        "--config_file", str(config_file),
        "--main_process_port", str(free_port()),
        str(TRAIN),
        "--output_dir", str(output_dir),
        "--max_train_samples", "500",
        "--num_train_epochs", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert succeeded(result)
    hyperparameters = read_json(output_dir / "run_info.json")["hyperparameters"]
    assert hyperparameters["mixed_precision"] == "bf16"
    assert hyperparameters["num_processes"] == 2


@pytest.mark.parametrize("name", ["single_gpu", "multi_gpu", "bf16", "multi_node", "cpu_ddp"])
def test_accelerate_config_file_loads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO_ROOT / "configs" / f"{name}.yaml"))
    assert config.num_processes >= 1


def test_failure_on_one_rank_ends_the_job(tmp_path):
    started = time.monotonic()
    result = launch(
        FAULTY_TRAIN,
        "--output_dir", str(tmp_path / "model"),
        "--max_train_samples", "2000",
        "--num_train_epochs", "2",
        num_processes=2,
        env={"FAULT_RAISE_AT_STEP": "3", "FAULT_RANK": "1"},
        timeout=240,
    )  # fmt: skip
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 3" in result.stdout + result.stderr
    assert time.monotonic() - started < 120


def test_fp16_from_launcher_without_cuda_fails_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid on this CUDA machine")
    # `accelerate launch --mixed_precision fp16` and config files reach the script as this variable.
    result = run_python(
        TRAIN, "--output_dir", str(tmp_path / "model"), env={"ACCELERATE_MIXED_PRECISION": "fp16"}, timeout=120
    )
    assert result.returncode != 0
    assert "--mixed_precision fp16 (from accelerate launch or its config file) needs a CUDA GPU" in result.stderr
    assert not (tmp_path / "model").exists()


def test_sigkill_mid_accumulation_then_resume_matches(reference_run, tmp_path):
    output_dir = tmp_path / "model"
    # Killed during the accumulation cycle of optimizer step 7, in the first epoch (10 steps per epoch).
    killed = run_python(FAULTY_TRAIN, "--output_dir", str(output_dir), *RESUMABLE_RUN, env={"FAULT_KILL_AT_STEP": "6"})
    assert killed.returncode == -9
    assert not (output_dir / "model.safetensors").exists()

    resumed = run_python(
        FAULTY_TRAIN, "--output_dir", str(output_dir), *RESUMABLE_RUN, "--resume_from_checkpoint", "true"
    )
    assert succeeded(resumed)
    assert same_weights(output_dir, reference_run)
    assert step_losses(output_dir) == step_losses(reference_run)
    resumed_results = read_json(output_dir / "all_results.json")
    reference_results = read_json(reference_run / "all_results.json")
    for key in ("train_loss", "validation_accuracy", "validation_loss", "test_accuracy", "test_loss"):
        assert resumed_results[key] == reference_results[key], key


def test_run_info_reports_gradient_accumulation(reference_run):
    hyperparameters = read_json(reference_run / "run_info.json")["hyperparameters"]
    assert hyperparameters["gradient_accumulation_steps"] == 3
    assert hyperparameters["effective_batch_size"] == 32 * 3


def test_half_written_checkpoint_is_skipped(reference_run, tmp_path, caplog):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    shutil.copytree(reference_run / "checkpoint-4", output_dir / "checkpoint-4")
    broken = output_dir / "checkpoint-8"
    shutil.copytree(reference_run / "checkpoint-8", broken)
    # A crash while saving: the weights are cut short and the trainer state was never written.
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (broken / "trainer_state.json").unlink()

    with caplog.at_level("WARNING", logger="hf_mnist.train"):
        chosen = last_complete_checkpoint(output_dir)
    assert chosen == output_dir / "checkpoint-4"
    assert "checkpoint-8: it was not completely written" in caplog.text


def test_truncated_weights_mark_checkpoint_incomplete(reference_run, tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(reference_run / "checkpoint-4", checkpoint)
    assert is_complete_checkpoint(checkpoint)
    weights = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(weights[:100])
    assert not is_complete_checkpoint(checkpoint)


def test_resume_from_half_written_path_is_refused(reference_run, tmp_path):
    broken = tmp_path / "checkpoint-8"
    shutil.copytree(reference_run / "checkpoint-8", broken)
    (broken / "trainer_state.json").write_text('{"global_step": ')
    result = run_python(
        TRAIN, "--output_dir", str(tmp_path / "model"), "--resume_from_checkpoint", str(broken), timeout=120
    )
    assert result.returncode != 0
    assert "was not completely written" in result.stderr


def test_same_seed_with_spawned_workers_reproduces_losses(reference_run, tmp_path):
    # Workers started with spawn import everything afresh, so evaluation and its workers are left out to keep
    # the run short. The per-step training losses are compared with the reference run.
    output_dir = tmp_path / "model"
    result = run_python(
        FAULTY_TRAIN,
        "--output_dir", str(output_dir),
        *RESUMABLE_RUN,
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--load_best_model_at_end", "false",
        "--dataloader_num_workers", "2",
        "--dataloader_persistent_workers", "true",
        env={"FAULT_START_METHOD": "spawn"},
    )  # fmt: skip
    assert succeeded(result)
    assert step_losses(output_dir) == step_losses(reference_run)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
def test_fp16_trains_on_gpu(tmp_path):
    output_dir = tmp_path / "model"
    result = launch(
        TRAIN, "--output_dir", str(output_dir), "--num_train_epochs", "2", "--use_cpu", "false",
        num_processes=1, mixed_precision="fp16",
    )  # fmt: skip
    assert succeeded(result)
    assert read_json(output_dir / "run_info.json")["hyperparameters"]["mixed_precision"] == "fp16"
    assert read_json(output_dir / "all_results.json")["test_accuracy"] >= 0.85


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs for NCCL")
def test_nccl_two_gpus_match_single_gpu_evaluation(tmp_path):
    output_dir = tmp_path / "model"
    trained = launch(TRAIN, "--output_dir", str(output_dir), "--num_train_epochs", "2", num_processes=2)
    assert succeeded(trained)
    assert read_json(output_dir / "run_info.json")["hyperparameters"]["num_processes"] == 2
