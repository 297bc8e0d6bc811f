"""Compare hf-mnist's training, data preparation and inference paths with a hand-written PyTorch route.

Every comparison runs in this process, except the memory check, which runs in a fresh subprocess so that its
peak RSS is its own. Contenders alternate and repeat; the table reports medians and ratios.

Examples:
    python scripts/benchmark.py            # about 1 minute on 2 cores; --repeats 7 takes about 2
    python scripts/benchmark.py --quick    # about 20 seconds: fewer repeats and digits
    python scripts/benchmark.py --profile  # also print the top cProfile entries of the pipeline run
"""

import argparse
import cProfile
import csv
import io
import json
import logging
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import torch
from torch import nn

from hf_mnist.configuration_mnist import MnistConfig
from hf_mnist.data import SAMPLE_PATH, load_digits
from hf_mnist.image_processing_mnist import MNIST_MEAN, MNIST_STD, MnistImageProcessor
from hf_mnist.inference import PredictionArguments, run_prediction
from hf_mnist.modeling_mnist import MnistForImageClassification
from hf_mnist.preprocessing import DigitTensors, collate_digit_batch, prepare_split
from hf_mnist.train import DataArguments, MnistTrainer, MnistTrainingArguments, ModelArguments, run_training

logger = logging.getLogger("benchmark")


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def load_sample(cache_dir: str) -> datasets.Dataset:
    """Load the 5,000 embedded digits as one file-backed split, so that datasets can cache maps over it."""
    return datasets.Dataset.from_parquet(str(SAMPLE_PATH), cache_dir=cache_dir)


def prepare_repeated(cache_dir: str, repeats: int, processor: MnistImageProcessor) -> DigitTensors:
    """Load the sample from parquet, repeat it, preprocess it (cached by datasets) and hold it as tensors."""
    sample = load_sample(cache_dir)
    repeated = datasets.concatenate_datasets([sample] * repeats)
    return DigitTensors(prepare_split(repeated, processor, desc="Benchmark digits"), processor)


def raw_pixels(split: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split's PNG digits with Pillow into (N, 28, 28) uint8 and (N,) int64 labels."""
    images = split["image"]
    return np.stack([np.asarray(image, dtype=np.uint8) for image in images]), np.asarray(split["label"])


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """Normalise (N, 28, 28) uint8 pixels to (N, 784) float32 with MNIST's mean and std, as tutorials do."""
    return torch.from_numpy((pixels.reshape(len(pixels), -1).astype(np.float32) / 255 - MNIST_MEAN) / MNIST_STD)


# ---------------------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------------------


def alternate(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run each contender `repeats` times, taking turns (A B A B ...), and return the wall times in seconds."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def hand_written_epoch(inputs: torch.Tensor, labels: torch.Tensor, seed: int) -> nn.Module:
    """Train the tutorial network (784-256-64-10) for one epoch: TensorDataset, shuffled batches of 64, Adam 1e-3."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=64, shuffle=True)
    loss_function = nn.CrossEntropyLoss()
    model.train()
    for batch_inputs, batch_labels in loader:
        optimizer.zero_grad()
        loss = loss_function(model(batch_inputs), batch_labels)
        loss.backward()
        optimizer.step()
    return model


def hf_trainer(train: DigitTensors, output_dir: str, seed: int):
    """Build a Trainer as `run_training` does, with the MnistTrainingArguments defaults, for one epoch.

    Evaluation and checkpointing are off, so that the time is the training epoch alone.
    """
    args = MnistTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=1,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
    )
    torch.manual_seed(seed)
    model = MnistForImageClassification(MnistConfig())
    return MnistTrainer(model=model, args=args, data_collator=collate_digit_batch, train_dataset=train)


@torch.inference_mode()
def accuracy(model: Callable, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    logits = model(inputs)
    logits = getattr(logits, "logits", logits)
    return float((logits.argmax(-1) == labels).float().mean())


def bench_training(work: Path, repeats: int, target_rows: int, rows: list) -> None:
    """Time one epoch for each contender on the same digits, and score both on held-out test digits."""
    splits = load_digits("sample", cache_dir=str(work / "cache"))
    processor = MnistImageProcessor()
    train_split = splits["train"]
    copies = max(1, round(target_rows / len(train_split)))
    train = DigitTensors(
        prepare_split(datasets.concatenate_datasets([train_split] * copies), processor, desc="Train digits"),
        processor,
    )
    test = DigitTensors(prepare_split(splits["test"], processor, desc="Test digits"), processor)

    # The hand-written loop reads Pillow-decoded pixels normalised by hand, never the processor's output.
    pixels, labels = raw_pixels(train_split)
    hand_inputs, hand_labels = normalise(np.tile(pixels, (copies, 1, 1))), torch.from_numpy(np.tile(labels, copies))
    test_pixels, test_labels = raw_pixels(splits["test"])
    hand_test = normalise(test_pixels)

    scores = {"hand-written": [], "hf-mnist Trainer": []}

    def run_hand():
        model = hand_written_epoch(hand_inputs, hand_labels, seed=len(scores["hand-written"]))
        scores["hand-written"].append(accuracy(model.eval(), hand_test, torch.from_numpy(test_labels)))

    def run_trainer():
        trainer = hf_trainer(train, str(work / "trainer"), seed=len(scores["hf-mnist Trainer"]))
        trainer.train()
        model = trainer.model.eval()
        scores["hf-mnist Trainer"].append(accuracy(model, test.pixel_values, test.labels))

    times = alternate({"hand-written": run_hand, "hf-mnist Trainer": run_trainer}, repeats)
    base = median(times["hand-written"])
    for name in times:
        rows.append(
            (
                f"train 1 epoch, {len(train):,} digits, batch 64",
                name,
                median(times[name]),
                median(times[name]) / base,
                f"test acc {median(scores[name]):.4f} ({len(test)} held out)",
            )
        )


# ---------------------------------------------------------------------------------------------------------
# Data preparation and memory
# ---------------------------------------------------------------------------------------------------------


def bench_preparation(work: Path, repeats: int, copies: int, epoch_seconds: float | None, rows: list) -> None:
    """Time parquet to DigitTensors for `copies` x 5,000 digits: a cold datasets cache, then a warm one."""
    cold, warm = [], []
    for attempt in range(repeats):
        cache = work / f"prep-cache-{attempt}"
        for timings in (cold, warm):
            start = time.perf_counter()
            prepare_repeated(str(cache), copies, MnistImageProcessor())
            timings.append(time.perf_counter() - start)
    note = "" if epoch_seconds is None else "share of one Trainer epoch"
    for name, values in (("cold cache (decode + MNIST step)", cold), ("warm cache (datasets map reused)", warm)):
        share = None if epoch_seconds is None else median(values) / epoch_seconds
        rows.append((f"prepare {copies * 5000:,} digits from parquet", name, median(values), share, note))


def memory_child(work: str, copies: int) -> None:
    """Subprocess body: prepare the digits, train one epoch, and print RSS figures as JSON."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    baseline_kib = _current_rss_kib()
    train = prepare_repeated(work, copies, MnistImageProcessor())
    prepared_peak_kib = _peak_rss_kib()
    trainer = hf_trainer(train, str(Path(work) / "trainer"), seed=0)
    trainer.train()
    peak_kib = _peak_rss_kib()
    model_bytes = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    data_bytes = train.pixel_values.numel() * 4 + train.labels.numel() * 8
    figures = {
        "growth": (peak_kib - baseline_kib) * 1024,
        "prepared_growth": (prepared_peak_kib - baseline_kib) * 1024,
        "data": data_bytes,
        "model": model_bytes,
    }
    print(json.dumps(figures))


def _peak_rss_kib() -> int:
    """Peak RSS of this process's own memory, in KiB.

    Not `ru_maxrss`: Linux carries it over from the parent through fork and exec, so a child started by a
    parent of 1.7 GiB RSS reports at least that. VmHWM belongs to the address space that exec creates.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line; the memory check needs Linux.")


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def bench_memory(work: Path, copies: int, threads: int, rows: list) -> None:
    result = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(work / "memory"), "--copies", str(copies)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_THREADS": str(threads)},
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    budget = 2 * (figures["data"] + figures["model"])
    rows.append(
        (
            f"peak RSS growth, prepare + train 1 epoch, {copies * 5000:,} digits",
            "hf-mnist Trainer",
            None,
            figures["growth"] / budget,
            f"{figures['growth'] / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget (2 x (data + model)); "
            f"{figures['prepared_growth'] / 2**20:.0f} MiB once the data is prepared",
        )
    )


# ---------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------


def train_inference_model(work: Path) -> str:
    """Train a model for the inference comparisons with a short `run_training` on the sample."""
    output_dir = work / "model"
    run_training(
        ModelArguments(),
        DataArguments(dataset_name="sample"),
        MnistTrainingArguments(
            output_dir=str(output_dir),
            num_train_epochs=1,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            load_best_model_at_end=False,
        ),
    )
    return str(output_dir)


def write_kaggle_csv(path: Path, pixels: np.ndarray) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"pixel{index}" for index in range(784)])
        writer.writerows(pixels.reshape(len(pixels), -1).tolist())


def throughput_rows(comparison: str, times: dict[str, list[float]], count: int) -> list[tuple]:
    """Build table rows of median times and throughput ratios to the "hand-written" contender."""
    base = median(times["hand-written"])
    rows = []
    for name, values in times.items():
        seconds = median(values)
        rows.append((comparison, name, seconds, base / seconds, f"{count / seconds:,.0f} digits/s"))
    return rows


def bench_inference(work: Path, repeats: int, copies: int, batch_size: int, profile: bool, rows: list) -> None:
    from transformers import pipeline

    model_dir = train_inference_model(work)
    model = MnistForImageClassification.from_pretrained(model_dir).eval()
    sample = load_sample(str(work / "cache"))
    images = list(sample["image"]) * copies
    pixels = np.tile(raw_pixels(sample)[0], (copies, 1, 1))
    csv_path = work / "digits.csv"
    write_kaggle_csv(csv_path, pixels)
    classifier = pipeline("image-classification", model=model_dir, trust_remote_code=True, device="cpu")

    # The same model with the MNIST-style step off, to show what that step costs on digits that are MNIST already.
    plain_dir = work / "model-without-mnist-step"
    model.save_pretrained(plain_dir)
    MnistImageProcessor.from_pretrained(model_dir, do_mnist_normalize=False).save_pretrained(plain_dir)
    plain_classifier = pipeline("image-classification", model=str(plain_dir), trust_remote_code=True, device="cpu")

    @torch.inference_mode()
    def hand_images():
        stacked = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
        return model(pixel_values=normalise(stacked).view(-1, 1, 28, 28)).logits.argmax(-1)

    def run_pipeline():
        return classifier(images, batch_size=batch_size, top_k=1)

    def run_plain_pipeline():
        return plain_classifier(images, batch_size=batch_size, top_k=1)

    @torch.inference_mode()
    def hand_csv():
        table = np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=np.uint8)
        return model(pixel_values=normalise(table).view(-1, 1, 28, 28)).logits.argmax(-1)

    def run_predict_csv(folder=model_dir):
        args = PredictionArguments(
            model=str(folder), inputs=[str(csv_path)], output_csv=str(work / "out.csv"), batch_size=batch_size
        )
        run_prediction(args)

    contenders = {"hand-written": hand_images, "pipeline": run_pipeline, "pipeline, MNIST step off": run_plain_pipeline}
    comparison = f"classify {len(images):,} PIL digits, batch {batch_size}"
    rows.extend(throughput_rows(comparison, alternate(contenders, repeats), len(images)))

    contenders = {
        "hand-written": hand_csv,
        "predict_csv": run_predict_csv,
        "predict_csv, MNIST step off": lambda: run_predict_csv(plain_dir),
    }
    comparison = f"predict {len(images):,} digits from a Kaggle CSV"
    rows.extend(throughput_rows(comparison, alternate(contenders, repeats), len(images)))

    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_pipeline)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        print(text.getvalue())


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def describe_machine(threads: int) -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {threads}"
    )


def print_table(rows: list) -> None:
    print("| comparison | contender | median s | ratio | note |")
    print("|---|---|---:|---:|---|")
    for comparison, name, seconds, ratio, note in rows:
        seconds_text = "" if seconds is None else f"{seconds:.2f}"
        ratio_text = "" if ratio is None else f"{ratio:.2f}"
        print(f"| {comparison} | {name} | {seconds_text} | {ratio_text} | {note} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer repeats and digits: about 20 seconds.")
    parser.add_argument("--repeats", type=int, default=None, help="Runs per contender. Default: 3, or 2 with --quick.")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for every contender. Default: torch's own default.",
    )
    parser.add_argument("--inference_batch_size", type=int, default=256, help="Images per forward pass. Default: 256.")
    parser.add_argument("--profile", action="store_true", help="Print the top cProfile entries of the pipeline.")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, default=12, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.copies)
        return

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    train_rows = 20_000 if args.quick else 60_000
    prep_copies = 4 if args.quick else 12
    inference_copies = 1 if args.quick else 2
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="hf-mnist-bench-") as folder:
        work = Path(folder)
        os.environ["HF_DATASETS_CACHE"] = str(work / "cache")
        bench_training(work, repeats, train_rows, rows)
        trainer_epoch = rows[-1][2] * prep_copies * 5000 / train_rows
        bench_preparation(work, repeats, prep_copies, trainer_epoch, rows)
        bench_memory(work, prep_copies, args.threads, rows)
        bench_inference(work, repeats, inference_copies, args.inference_batch_size, args.profile, rows)

    print(describe_machine(args.threads))
    print("command: python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print_table(rows)


if __name__ == "__main__":
    main()
