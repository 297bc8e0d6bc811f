"""Publishing to the Hub and loading back, all against the local Hub of conftest.py.

One training run on the embedded sample pushes itself with `--push_to_hub` (module fixture `published_run`),
and most tests reuse its output folder and repo. The repo is loaded back with `pipeline()` in a process where
`hf_mnist` cannot be imported, first from the local Hub and then offline from the cache.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import json
import logging
import os
import runpy
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard

from hf_mnist import MnistForImageClassification, MnistImageProcessor
from hf_mnist.cli import parse_arguments
from hf_mnist.data import load_digits
from hf_mnist.hub import HubAccessError, HubPushError, push_output_dir, render_model_card, rerun_command
from hf_mnist.model_card import (
    CONFUSION_MATRIX_IMAGE,
    LOCAL_DATASET_NAME,
    SAMPLE_DATASET_NAME,
    TEMPLATE_PATH,
    TRAINING_CURVE_IMAGE,
    render_card_images,
)
from hf_mnist.train import DataArguments, MnistTrainingArguments, ModelArguments, run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_EPOCHS = 3
PREDICTED_DIGITS = 40
BLOCKED_MARKER = "NETWORK-ACCESS-BLOCKED"

EXPECTED_REPO_FILES = {
    ".gitattributes",
    "README.md",
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "configuration_mnist.py",
    "modeling_mnist.py",
    "image_processing_mnist.py",
    "pipeline_mnist.py",
    "all_results.json",
    "train_results.json",
    "validation_results.json",
    "test_results.json",
    "evaluation_details.json",
    "run_info.json",
    "trainer_state.json",
    CONFUSION_MATRIX_IMAGE,
    TRAINING_CURVE_IMAGE,
}
# Requests that create a repo or upload something. None may reach the Hub when the token check fails.
UPLOAD_PATH_PARTS = ("/preupload/", "/commit/", "/api/repos/create", "/info/lfs/", "/lfs-objects/")

# Runs a script as __main__ after turning off the lookup of `datasets-server.<endpoint host>` and blocking
# name lookups beyond loopback, because a subprocess has neither conftest's flag nor its network guard.
SCRIPT_LAUNCHER = textwrap.dedent(
    f"""
    import runpy
    import socket
    import sys

    import datasets.config

    datasets.config.USE_PARQUET_EXPORT = False
    _getaddrinfo = socket.getaddrinfo

    def _loopback_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "", "localhost", "::1") and not str(name).startswith("127."):
            print("{BLOCKED_MARKER} name lookup of " + repr(name), file=sys.stderr, flush=True)
            raise RuntimeError("tests may only reach 127.0.0.1, not " + repr(name))
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = _loopback_only
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)

# Loads a repo id with pipeline() and with the Auto classes, as the model card shows, without hf_mnist.
LOAD_WITHOUT_HF_MNIST = textwrap.dedent(
    """
    import json
    import sys

    sys.modules["hf_mnist"] = None  # any import of hf_mnist now raises ImportError
    try:
        import hf_mnist
        raise SystemExit("hf_mnist is importable; the test would prove nothing")
    except ImportError:
        pass

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    repo_id, image_paths = sys.argv[1], sys.argv[2:]
    images = [Image.open(path) for path in image_paths]
    classifier = pipeline("image-classification", model=repo_id, trust_remote_code=True)
    pipeline_labels = [result[0]["label"] for result in classifier(images, batch_size=8)]

    processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
    model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        logits = model(pixel_values=pixel_values).logits
    class_labels = [model.config.id2label[index] for index in logits.argmax(-1).tolist()]
    print(json.dumps({"pipeline": pipeline_labels, "auto_classes": class_labels}))
    """
)


@dataclass(frozen=True)
class PublishedRun:
    output_dir: Path
    repo_id: str
    training_log: str


def hub_environment(home: Path, *, token: str | None = None, offline: bool = False) -> dict[str, str]:
    """Return the environment of a subprocess: the local Hub, an HF home at `home`, and only the given token."""
    removed = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    environment = {name: value for name, value in os.environ.items() if name not in removed}
    environment.update(
        {
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_MODULES_CACHE": str(home / "modules"),
        }
    )
    if token is not None:
        environment["HF_TOKEN"] = token
    if offline:
        environment["HF_HUB_OFFLINE"] = "1"
    return environment


def run_script(script: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT_LAUNCHER, str(REPO_ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )
    assert BLOCKED_MARKER not in result.stderr, result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def load_push_script():
    spec = importlib.util.spec_from_file_location("push_to_hub_script", REPO_ROOT / "scripts" / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder_digest(folder: Path) -> dict[str, str]:
    """Return the sha256 of every file under `folder`, by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def upload_requests(hub) -> list[str]:
    return [f"{r.method} {r.path}" for r in hub.requests if any(part in r.path for part in UPLOAD_PATH_PARTS)]


def copy_run(output_dir: Path, target: Path) -> Path:
    """Copy the top-level files of a run folder (no checkpoints), for tests that edit them."""
    target.mkdir()
    for path in output_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    return target


def card_metadata(card: ModelCard) -> dict:
    return yaml.safe_load(str(card).split("---\n")[1])


@pytest.fixture(scope="module")
def published_run(hub, tmp_path_factory) -> PublishedRun:
    """Train on the embedded sample with --push_to_hub, which leaves the repo as a training run publishes it."""
    root = tmp_path_factory.mktemp("published")
    output_dir = root / "mnist-mlp"
    repo_id = hub.new_repo_id("mnist-mlp")
    result = run_script(
        "train.py",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        str(TRAIN_EPOCHS),
        "--push_to_hub",
        "--hub_model_id",
        repo_id,
        env=hub_environment(root / "hf_home", token=hub.token),
    )
    return PublishedRun(output_dir, repo_id, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def sample_test_digit_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("digits")
    test_split = load_digits("sample")["test"]
    paths = []
    for index in range(PREDICTED_DIGITS):
        path = folder / f"digit_{index:02d}.png"
        test_split[index]["image"].save(path)
        paths.append(path)
    return paths


# --- The repo that a training run publishes --------------------------------------------------------


def test_training_push_uploads_only_publishable_files(published_run, hub):
    files = set(HfApi().list_repo_files(published_run.repo_id))

    assert files == EXPECTED_REPO_FILES
    assert not [name for name in files if name.startswith("checkpoint-")]
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".tmp"))]


def test_training_push_is_one_commit(published_run, hub):
    # The repo's initial commit (.gitattributes), then everything at once.
    assert len(hub.commit_ids(published_run.repo_id)) == 2


def test_published_weights_match_output_folder(published_run, hub):
    uploaded = hub.read_file(published_run.repo_id, "model.safetensors")

    assert uploaded == (published_run.output_dir / "model.safetensors").read_bytes()
    assert hub.is_lfs(published_run.repo_id, "model.safetensors")


def test_published_config_has_auto_map(published_run, hub):
    config = json.loads(hub.read_file(published_run.repo_id, "config.json"))

    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_mnist.MnistForImageClassification"


def test_published_files_hold_no_token_or_local_path(published_run, hub):
    local_markers = [str(published_run.output_dir), str(published_run.output_dir.parent), str(Path.home())]
    for name in EXPECTED_REPO_FILES:
        content = hub.read_file(published_run.repo_id, name)
        assert hub.token.encode() not in content, name
        if name.endswith((".json", ".md")):
            text = content.decode()
            for marker in local_markers:
                assert marker not in text, (name, marker)

    state = json.loads(hub.read_file(published_run.repo_id, "trainer_state.json"))
    assert state["best_model_checkpoint"].startswith("checkpoint-")
    assert hub.token not in published_run.training_log


def test_published_card_equals_local_rendering(published_run, hub):
    # The training process and this one render the same bytes, which is what lets a repeated push be a no-op.
    rendered = str(render_model_card(published_run.output_dir, published_run.repo_id))

    assert hub.read_file(published_run.repo_id, "README.md").decode() == rendered


def test_pipeline_from_hub_matches_local_model(published_run, sample_test_digit_files, hub, tmp_path):
    home = tmp_path / "fresh_hf_home"
    command = [sys.executable, "-c", LOAD_WITHOUT_HF_MNIST, published_run.repo_id, *map(str, sample_test_digit_files)]

    online = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=hub_environment(home)
    )
    assert online.returncode == 0, online.stderr
    online_labels = json.loads(online.stdout.strip().splitlines()[-1])

    hub.reset_requests()
    offline = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=hub_environment(home, offline=True)
    )
    assert offline.returncode == 0, offline.stderr
    offline_labels = json.loads(offline.stdout.strip().splitlines()[-1])
    assert hub.requests == []

    from PIL import Image

    model = MnistForImageClassification.from_pretrained(published_run.output_dir).eval()
    processor = MnistImageProcessor.from_pretrained(published_run.output_dir)
    with torch.inference_mode():
        logits = model(**processor([Image.open(path) for path in sample_test_digit_files], return_tensors="pt")).logits
    local_labels = [str(label) for label in logits.argmax(-1).tolist()]

    assert online_labels["pipeline"] == local_labels
    assert online_labels["auto_classes"] == local_labels
    assert offline_labels["pipeline"] == local_labels
    assert offline_labels["auto_classes"] == local_labels


# --- The model card --------------------------------------------------------------------------------


def test_card_metadata_passes_hub_validation(published_run):
    card = render_model_card(published_run.output_dir, published_run.repo_id)

    card.validate()  # raises ValueError with the server's errors


def test_card_accuracy_matches_all_results(published_run):
    results = json.loads((published_run.output_dir / "all_results.json").read_text())
    metadata = card_metadata(render_model_card(published_run.output_dir, published_run.repo_id))
    result = metadata["model-index"][0]["results"][0]
    metrics = {metric["type"]: metric["value"] for metric in result["metrics"]}

    assert result["dataset"]["split"] == "test"
    assert metrics["accuracy"] == results["test_accuracy"]
    assert metrics["f1"] == results["test_f1_macro"]


def test_card_metadata_for_embedded_sample(published_run):
    metadata = card_metadata(render_model_card(published_run.output_dir, published_run.repo_id))

    assert metadata["license"] == "apache-2.0"
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-classification"
    assert {"hf-mnist", "mnist", "image-classification", "custom_code"} <= set(metadata["tags"])
    assert metadata["metrics"] == ["accuracy", "f1"]
    assert "datasets" not in metadata
    assert metadata["model-index"][0]["name"] == published_run.repo_id.split("/")[1]
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == SAMPLE_DATASET_NAME


def test_card_contains_no_local_path_or_token(published_run, hub):
    text = str(render_model_card(published_run.output_dir, published_run.repo_id))

    for forbidden in (
        str(published_run.output_dir),
        str(published_run.output_dir.parent),
        str(Path.home()),
        "/tmp",
        "/root",
        getpass.getuser(),
        hub.token,
    ):
        assert forbidden not in text, forbidden


def test_card_body_reports_run_facts(published_run):
    output_dir = published_run.output_dir
    run_info = json.loads((output_dir / "run_info.json").read_text())
    details = json.loads((output_dir / "evaluation_details.json").read_text())
    text = render_model_card(output_dir, published_run.repo_id).text
    prose = " ".join(text.split())

    assert run_info["architecture"] in text
    assert f"{run_info['num_parameters']:,} parameters in all" in prose
    hyperparameters = run_info["hyperparameters"]
    assert f"| effective batch size | {hyperparameters['effective_batch_size']} |" in text
    assert f"| gradient accumulation steps | {hyperparameters['gradient_accumulation_steps']} |" in text
    assert f"| processes | {hyperparameters['num_processes']} |" in text
    assert f"| mixed precision | {hyperparameters['mixed_precision']} |" in text
    assert "| optimizer | adamw_torch_fused |" in text
    assert "| train | 4,000 |" in text
    per_class = details["validation"]["per_class_accuracy"][3], details["test"]["per_class_accuracy"][3]
    assert f"| 3 | {per_class[0]:.4f} | {per_class[1]:.4f} |" in text
    assert f"]({CONFUSION_MATRIX_IMAGE})" in text
    assert f"]({TRAINING_CURVE_IMAGE})" in text
    assert f'pipeline("image-classification", model="{published_run.repo_id}", trust_remote_code=True)' in text
    assert "AutoModelForImageClassification.from_pretrained" in text
    assert f"- transformers {run_info['framework_versions']['transformers']}" in text
    assert "one white digit on a black background, centred in a 28×28 grey image" in prose
    assert "Hub's hosted inference widget does not run" in prose


def test_card_reports_validation_without_test_split(published_run, tmp_path):
    run = copy_run(published_run.output_dir, tmp_path / "run")
    results = json.loads((run / "all_results.json").read_text())
    results = {key: value for key, value in results.items() if not key.startswith("test_")}
    (run / "all_results.json").write_text(json.dumps(results))
    details = json.loads((run / "evaluation_details.json").read_text())
    (run / "evaluation_details.json").write_text(json.dumps({"validation": details["validation"]}))

    metadata = card_metadata(render_model_card(run, "test-user/no-test-split"))
    result = metadata["model-index"][0]["results"][0]

    assert result["dataset"]["split"] == "validation"
    assert result["metrics"][0] == {
        "type": "accuracy",
        "value": results["validation_accuracy"],
        "name": "Validation accuracy",
    }


def test_card_for_local_dataset_names_no_path(published_run, tmp_path):
    run = copy_run(published_run.output_dir, tmp_path / "run")
    run_info = json.loads((run / "run_info.json").read_text())
    run_info["dataset"] = {"source": "local", "hub_id": None, "format": "csv"}
    (run / "run_info.json").write_text(json.dumps(run_info))

    card = render_model_card(run, "test-user/local-data")
    metadata = card_metadata(card)

    assert "datasets" not in metadata
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == LOCAL_DATASET_NAME
    assert "a Kaggle-style CSV file" in card.text
    assert str(tmp_path) not in str(card)


def test_card_rendering_is_deterministic(published_run, tmp_path):
    first = str(render_model_card(published_run.output_dir, published_run.repo_id))
    second = str(render_model_card(published_run.output_dir, published_run.repo_id))
    before = folder_digest(published_run.output_dir)
    render_card_images(published_run.output_dir, tmp_path / "first")
    render_card_images(published_run.output_dir, tmp_path / "second")

    assert first == second
    assert folder_digest(tmp_path / "first") == folder_digest(tmp_path / "second")
    assert set(folder_digest(tmp_path / "first")) == {CONFUSION_MATRIX_IMAGE, TRAINING_CURVE_IMAGE}
    assert folder_digest(published_run.output_dir) == before


def test_card_template_copy_matches_top_level():
    # The package ships a copy of the top-level template; after editing model_card.md, copy it over.
    assert TEMPLATE_PATH.read_bytes() == (REPO_ROOT / "model_card.md").read_bytes()


# --- Token and folder checks -----------------------------------------------------------------------


def test_push_without_token_fails_before_upload(published_run, hub):
    repo_id = hub.new_repo_id("no-token")

    with pytest.raises(HubAccessError, match=r"No Hugging Face token found.*`hf auth login`.*HF_TOKEN"):
        push_output_dir(published_run.output_dir, repo_id)
    assert upload_requests(hub) == []


def test_push_with_rejected_token_fails_before_upload(published_run, hub, caplog):
    repo_id = hub.new_repo_id("rejected-token")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(HubAccessError, match=r"rejected the token given with --hub_token \(401 Unauthorized\)"):
        push_output_dir(published_run.output_dir, repo_id, token="hf_not_a_known_token")
    assert upload_requests(hub) == []
    assert "hf_not_a_known_token" not in caplog.text


def test_push_with_read_only_token_fails_before_upload(published_run, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    repo_id = hub.new_repo_id("read-token")

    with pytest.raises(HubAccessError, match=r"HF_TOKEN environment variable of user test-user is read-only"):
        push_output_dir(published_run.output_dir, repo_id)
    assert upload_requests(hub) == []


def test_push_to_foreign_namespace_fails_before_upload(published_run, hub, hub_token):
    message = r"cannot push to someone-else/mnist, because test-user is not a member of someone-else"
    with pytest.raises(HubAccessError, match=message):
        push_output_dir(published_run.output_dir, "someone-else/mnist")
    assert upload_requests(hub) == []


def test_push_of_incomplete_folder_names_missing_files(published_run, hub, hub_token, tmp_path):
    run = copy_run(published_run.output_dir, tmp_path / "run")
    (run / "run_info.json").unlink()
    (run / "model.safetensors").unlink()

    with pytest.raises(FileNotFoundError, match=r"model.safetensors, run_info.json are missing.*scripts/train.py"):
        push_output_dir(run, hub.new_repo_id("incomplete"))
    assert hub.requests == []


def test_push_of_old_folder_gives_resave_command(published_run, hub, hub_token, tmp_path):
    run = copy_run(published_run.output_dir, tmp_path / "run")
    (run / "pipeline_mnist.py").unlink()
    config = json.loads((run / "config.json").read_text())
    del config["custom_pipelines"]
    (run / "config.json").write_text(json.dumps(config))

    with pytest.raises(FileNotFoundError, match=r"pipeline_mnist.py is missing.*python -c") as raised:
        push_output_dir(run, hub.new_repo_id("old-folder"))
    command = str(raised.value).split("python -c ", 1)[1]
    subprocess.run([sys.executable, "-c", *shlex.split(command)], check=True)

    assert (run / "pipeline_mnist.py").is_file()
    assert "image-classification" in json.loads((run / "config.json").read_text())["custom_pipelines"]
    assert hub.requests == []


def test_training_push_without_token_fails_before_training(hub, tmp_path):
    output_dir = tmp_path / "out"
    arguments = parse_arguments(
        (ModelArguments, DataArguments, MnistTrainingArguments),
        ["--output_dir", str(output_dir), "--push_to_hub", "--hub_model_id", hub.new_repo_id("untrained")],
    )

    with pytest.raises(HubAccessError, match="No Hugging Face token found"):
        run_training(*arguments)
    assert not output_dir.exists()
    assert upload_requests(hub) == []


def test_push_script_exits_with_message(published_run, hub, monkeypatch):
    script = REPO_ROOT / "scripts" / "push_to_hub.py"
    monkeypatch.setattr("hf_mnist.cli.setup_logging", lambda *args: None)  # keep the test process's logging
    monkeypatch.setattr(sys, "argv", [str(script), str(published_run.output_dir), "--repo_id", hub.new_repo_id("cli")])

    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")

    # sys.exit with a message prints it to stderr, without a traceback, and exits with status 1.
    assert str(exited.value.code).startswith("error: No Hugging Face token found")
    assert upload_requests(hub) == []


def test_push_script_creates_private_repo(published_run, hub, hub_token):
    repo_id = hub.new_repo_id("private")

    load_push_script().main(
        [str(published_run.output_dir), "--repo_id", repo_id, "--private", "--commit_message", "First upload"]
    )

    assert HfApi().repo_info(repo_id).private is True
    assert HfApi().list_repo_commits(repo_id)[0].title == "First upload"
    assert set(HfApi().list_repo_files(repo_id)) == EXPECTED_REPO_FILES


# --- Repeated and failed pushes --------------------------------------------------------------------


def test_repeated_push_uploads_nothing(published_run, hub, hub_token, caplog):
    caplog.set_level(logging.DEBUG)
    commits_before = hub.commit_ids(published_run.repo_id)

    url = push_output_dir(published_run.output_dir, published_run.repo_id)

    assert hub.commit_ids(published_run.repo_id) == commits_before
    assert url.endswith(commits_before[0])
    assert [r.path for r in hub.requests if "/commit/" in r.path or "/lfs-objects/" in r.path] == []
    assert hub.token not in caplog.text


@pytest.mark.parametrize("failure", ["server error", "dropped connection"])
def test_failed_commit_keeps_folder_and_rerun_succeeds(published_run, hub, hub_token, caplog, failure):
    caplog.set_level(logging.DEBUG)
    repo_id = hub.new_repo_id("retry")
    before = folder_digest(published_run.output_dir)
    if failure == "server error":
        hub.fail_next(1, status=500, method="POST", path_contains="/commit/")
    else:
        hub.drop_next(1, method="POST", path_contains="/commit/")

    with pytest.raises(HubPushError) as raised:
        push_output_dir(published_run.output_dir, repo_id)

    command = rerun_command(published_run.output_dir, repo_id)
    assert command in str(raised.value)
    assert command.startswith("python scripts/push_to_hub.py ")
    assert folder_digest(published_run.output_dir) == before
    assert HfApi().list_repo_files(repo_id) == [".gitattributes"]

    load_push_script().main(shlex.split(command)[2:])

    assert set(HfApi().list_repo_files(repo_id)) == EXPECTED_REPO_FILES
    assert folder_digest(published_run.output_dir) == before
    assert hub.token not in caplog.text


# --- Datasets on the Hub ---------------------------------------------------------------------------


def test_training_from_hub_dataset_lists_it_in_card(hub, hub_token, tmp_path):
    dataset_id = hub.new_repo_id("digits")
    sample = load_digits("sample")
    sample.push_to_hub(dataset_id)

    loaded = load_digits(dataset_id)
    assert {name: split.num_rows for name, split in loaded.items()} == {"train": 4000, "validation": 500, "test": 500}
    assert loaded["test"]["label"] == sample["test"]["label"]

    model_id = hub.new_repo_id("from-hub-data")
    arguments = parse_arguments(
        (ModelArguments, DataArguments, MnistTrainingArguments),
        [
            "--dataset_name",
            dataset_id,
            "--output_dir",
            str(tmp_path / "out"),
            "--num_train_epochs",
            "1",
            "--max_train_samples",
            "1000",
            "--push_to_hub",
            "--hub_model_id",
            model_id,
        ],
    )
    run_training(*arguments)
    card = ModelCard(hub.read_file(model_id, "README.md").decode())
    metadata = card_metadata(card)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())

    assert metadata["datasets"] == [dataset_id]
    assert metadata["model-index"][0]["results"][0]["dataset"]["type"] == dataset_id
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == results["test_accuracy"]
    assert f"The Hub dataset `{dataset_id}`" in card.text
