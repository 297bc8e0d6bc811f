"""Publishing a training run's output folder to a Hub model repo, with a generated model card.

`push_output_dir` uploads, in one commit: the safetensors weights, `config.json` (with its `auto_map`),
`preprocessor_config.json`, the four shipped source files, the result JSON files, a README.md rendered by
`hf_mnist.model_card`, and the card's figures under `images/`. Checkpoints, optimizer and RNG states,
`training_args.bin` and temporary files stay local. The card and figures are rendered into a temporary
folder, so the output folder is only read. A failed push leaves it as it was and names the command to rerun.

`check_push_access` checks the token before anything is uploaded, and before training when
`scripts/train.py --push_to_hub` calls it. The token comes, in this order, from the `token` argument
(`--hub_token`), the `HF_TOKEN` environment variable, or the store of `hf auth login`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, httpx, validate_repo_id

from .model_card import CARD_SOURCE_FILES, card_image_paths, render_card_images, render_model_card

logger = logging.getLogger(__name__)

PIPELINE_CODE_FILE = "pipeline_mnist.py"
SHIPPED_CODE_FILES = ("configuration_mnist.py", "modeling_mnist.py", "image_processing_mnist.py", PIPELINE_CODE_FILE)
REQUIRED_FILES = (
    "config.json",
    "preprocessor_config.json",
    *SHIPPED_CODE_FILES,
    *(name for name in CARD_SOURCE_FILES if name not in ("config.json", "preprocessor_config.json")),
)
# Uploaded when present: the result files that `Trainer.save_metrics` writes per split.
OPTIONAL_RESULT_FILES = ("train_results.json", "validation_results.json", "test_results.json")
SINGLE_WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Rewritten before upload, because Trainer records the best checkpoint by its local path.
TRAINER_STATE_FILE = "trainer_state.json"

PUSH_SCRIPT = "scripts/push_to_hub.py"

# Organisation roles, as whoami reports them, that cannot create or update repos.
_READ_ONLY_ORG_ROLES = ("read",)


class HubAccessError(PermissionError):
    """The token is missing, rejected by the Hub, read-only, or cannot write to the repo's namespace."""


class HubPushError(RuntimeError):
    """The upload failed. The output folder is unchanged, and the message gives the command to rerun."""


# --- Access ----------------------------------------------------------------------------------------


def check_push_access(repo_id: str, token: str | None = None) -> None:
    """Check that a token with write access to the namespace of `repo_id` is available, uploading nothing.

    Args:
        repo_id: `owner/name`, or `name` for a repo of the token's user.
        token: A Hub token. Default: `HF_TOKEN`, then the token stored by `hf auth login`.

    Raises:
        ValueError: `repo_id` is not a valid repo id.
        HubAccessError: No token was found, the Hub rejected it, it is read-only, or its user cannot write to
            the namespace of `repo_id`.
        ConnectionError: The Hub could not be reached, or returned a server error to the token check.
    """
    _resolve_access(repo_id, token)


def _resolve_access(repo_id: str, token: str | None) -> tuple[str, str]:
    """Check push access as `check_push_access` does, and return the token and the full `owner/name` repo id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"Invalid Hub repo id {repo_id!r}: {err} Use the form user/name.") from err

    token, source = _find_token(token)
    endpoint = huggingface_hub.constants.ENDPOINT
    settings_page = f"{endpoint}/settings/tokens"
    if token is None:
        raise HubAccessError(
            f"No Hugging Face token found, and pushing to {repo_id} needs one with write access. Log in with "
            f"`hf auth login`, set the HF_TOKEN environment variable, or pass --hub_token. Create a write "
            f"token at {settings_page}."
        )

    try:
        identity = HfApi(endpoint=endpoint).whoami(token=token)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubAccessError(
                f"The Hub at {endpoint} rejected {source} (401 Unauthorized): it is invalid, expired or revoked. "
                f"Create a new write token at {settings_page}, then log in again with `hf auth login` or set "
                "HF_TOKEN."
            ) from err
        raise ConnectionError(f"The Hub at {endpoint} failed to check {source}: {err}") from err
    except httpx.TransportError as err:
        raise ConnectionError(
            f"Could not reach the Hub at {endpoint} to check {source} ({type(err).__name__}: {err}). Check the "
            "network connection, or the HF_ENDPOINT variable if it is set."
        ) from err

    user = identity.get("name", "unknown")
    owned_token = f"{source[0].upper()}{source[1:]} of user {user}"
    role = ((identity.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubAccessError(
            f"{owned_token} is read-only, and pushing to {repo_id} needs write access. "
            f"Create a token with the write role at {settings_page}, then log in with `hf auth login` or set "
            "HF_TOKEN."
        )
    if role == "fineGrained":
        # NOTE: the permissions of a fine-grained token are not checked here. The Hub checks them when the
        # repo is created and the commit sent, which `scripts/train.py --push_to_hub` does after training.
        logger.info("Using a fine-grained token of user %s. The Hub checks its write permission on upload.", user)

    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    namespace = repo_id.split("/")[0]
    if namespace != user:
        roles = {org.get("name"): org.get("roleInOrg") for org in identity.get("orgs") or []}
        if namespace not in roles:
            raise HubAccessError(
                f"{owned_token} cannot push to {repo_id}, because {user} is not a member of {namespace}. Use a "
                f"repo id under {user}/ or under an organisation of {user}: {sorted(roles) or 'none'}."
            )
        if roles[namespace] in _READ_ONLY_ORG_ROLES:
            raise HubAccessError(
                f"User {user} has the read role in {namespace}, so {source} cannot push to {repo_id}. Ask an "
                f"admin of {namespace} for the write role, or use a repo id under {user}/."
            )
    return token, repo_id


def _find_token(explicit: str | None) -> tuple[str | None, str]:
    """Return the token to use and a description of its source for messages. The token itself is never logged."""
    if explicit:
        return explicit, "the token given with --hub_token"
    token = huggingface_hub.get_token()
    if token is None:
        return None, "no token"
    if token == (os.environ.get("HF_TOKEN") or "").strip():
        return token, "the token in the HF_TOKEN environment variable"
    if token == (os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip():
        return token, "the token in the HUGGING_FACE_HUB_TOKEN environment variable"
    return token, "the token stored by `hf auth login`"


# --- The output folder -----------------------------------------------------------------------------


def check_output_dir(output_dir: str | os.PathLike) -> list[str]:
    """Check that `output_dir` contains a finished training run, and return the names of the files to upload.

    Raises:
        FileNotFoundError: The folder does not exist, or files that a finished run writes are missing.
        ValueError: `config.json` has no `auto_map`, so the repo would not load with `trust_remote_code=True`.
    """
    folder = Path(output_dir)
    rerun = f"python scripts/train.py --output_dir {shlex.quote(str(folder))} --overwrite_output_dir"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Output folder {folder} not found. Pass the --output_dir of a finished training run, or train one "
            f"with `{rerun}`."
        )

    weights = _weights_files(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not weights:
        missing.insert(0, SINGLE_WEIGHTS_FILE)
    if missing == [PIPELINE_CODE_FILE]:
        resave = (
            "from hf_mnist import MnistForImageClassification as M; "
            f"M.from_pretrained({str(folder)!r}).save_pretrained({str(folder)!r})"
        )
        raise FileNotFoundError(
            f"Output folder {folder} was saved before hf-mnist shipped its batched pipeline, so "
            f"{PIPELINE_CODE_FILE} is missing. Save the model again, which adds the file and its "
            f"custom_pipelines entry in config.json: python -c {shlex.quote(resave)}"
        )
    if missing:
        raise FileNotFoundError(
            f"Output folder {folder} is not a finished hf-mnist training run: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing. A training run writes them all when it ends; train "
            f"again with `{rerun}`."
        )

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not config.get("auto_map"):
        raise ValueError(
            f"{folder / 'config.json'} has no auto_map, so the repo would not load with trust_remote_code=True. "
            f"Save the model with hf_mnist imported, as scripts/train.py does, for example with `{rerun}`."
        )
    optional = [name for name in OPTIONAL_RESULT_FILES if (folder / name).is_file()]
    return [*weights, *REQUIRED_FILES, *optional]


def _weights_files(folder: Path) -> list[str]:
    """Return the safetensors weights of a saved model: one file, or the index and its shards."""
    if (folder / SINGLE_WEIGHTS_FILE).is_file():
        return [SINGLE_WEIGHTS_FILE]
    index_path = folder / WEIGHTS_INDEX_FILE
    if not index_path.is_file():
        return []
    shards = sorted(set(json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {}).values()))
    if not shards or not all((folder / shard).is_file() for shard in shards):
        return []
    return [WEIGHTS_INDEX_FILE, *shards]


def _local_path_markers(output_dir: Path) -> list[str]:
    """Return local paths that must not appear in uploaded metadata: the output folder and the home folder."""
    markers = {str(output_dir.absolute()), str(output_dir.resolve())}
    home = Path.home()
    if home.parent != home:  # a home at the file-system root would match every path
        markers.add(str(home))
    return sorted(markers)


def _check_no_local_paths(path: Path, markers: list[str]) -> None:
    text = path.read_text(encoding="utf-8")
    for marker in markers:
        if marker in text:
            raise ValueError(
                f"{path.name} contains the local path {marker}, which must not be published. Remove it from "
                "the file, or report this as a bug of hf-mnist if the file was written by scripts/train.py."
            )


def _stage_generated_files(output_dir: Path, repo_id: str, staging: Path) -> list[str]:
    """Write the card, its figures and the cleaned trainer state into `staging`, and return their repo paths."""
    render_model_card(output_dir, repo_id).save(staging / "README.md")
    render_card_images(output_dir, staging)

    # Trainer records the best checkpoint as a local path, so only the folder name is published.
    state = json.loads((output_dir / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    if state.get("best_model_checkpoint"):
        state["best_model_checkpoint"] = Path(state["best_model_checkpoint"]).name
    (staging / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return ["README.md", TRAINER_STATE_FILE, *card_image_paths(output_dir)]


# --- Push ------------------------------------------------------------------------------------------


def rerun_command(
    output_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None, commit_message: str | None = None
) -> str:
    """Return the `scripts/push_to_hub.py` command line that repeats a push. It never contains a token."""
    arguments = ["python", PUSH_SCRIPT, str(Path(output_dir).absolute()), "--repo_id", repo_id]
    if private:
        arguments.append("--private")
    if commit_message:
        arguments += ["--commit_message", commit_message]
    return shlex.join(arguments)


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish the training run in `output_dir` to the Hub model repo `repo_id`, in one commit.

    The repo is created when it does not exist, as private when `private` is true. An existing repo keeps
    its visibility. Files that did not change are not uploaded again, and a push that changes nothing
    creates no commit. The output folder is only read.
    NOTE: files that an earlier push uploaded and this one does not (such as weight shards of a larger
    model) stay in the repo.

    Args:
        output_dir: Output folder of a finished `scripts/train.py` run.
        repo_id: `owner/name`, or `name` for a repo of the token's user.
        token: A Hub token with write access. Default: `HF_TOKEN`, then the token stored by `hf auth login`.
        private: Create the repo as private. Default: the Hub's default for the namespace.
        commit_message: Summary of the commit. Default: one naming the model and its held-out accuracy.

    Returns:
        The URL of the commit, or of the current commit when nothing changed.

    Raises:
        FileNotFoundError, ValueError: The folder is not a finished training run (see `check_output_dir`).
        HubAccessError, ConnectionError: The token check failed (see `check_push_access`). Nothing was uploaded.
        HubPushError: Creating the repo or the commit failed. The message names the command to rerun.
    """
    folder = Path(output_dir)
    upload_names = check_output_dir(folder)
    token, repo_id = _resolve_access(repo_id, token)
    rerun = rerun_command(folder, repo_id, private=private, commit_message=commit_message)
    api = HfApi(endpoint=huggingface_hub.constants.ENDPOINT, token=token)

    with tempfile.TemporaryDirectory(prefix="hf-mnist-push-") as staging_dir:
        staging = Path(staging_dir)
        staged_paths = _stage_generated_files(folder, repo_id, staging)
        markers = _local_path_markers(folder)
        for name in [*staged_paths, *upload_names]:
            source = staging / name if name in staged_paths else folder / name
            if name.endswith((".json", ".md")):
                _check_no_local_paths(source, markers)

        # The staged trainer state replaces the local one.
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
            for name in upload_names
            if name not in staged_paths
        ]
        operations += [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staging / name)) for name in staged_paths
        ]
        message = commit_message or _default_commit_message(folder, repo_id)

        logger.info("Pushing %d files from %s to the Hub repo %s", len(operations), folder, repo_id)
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.create_commit(repo_url.repo_id, operations, commit_message=message)
        except (HfHubHTTPError, httpx.HTTPError, OSError) as err:
            raise HubPushError(
                f"Pushing {folder} to the Hub repo {repo_id} failed: {type(err).__name__}: {err}\n"
                "The output folder is unchanged, and the repo received no partial commit. Once the cause is "
                f"fixed, push again (adding --hub_token if the token was given that way):\n  {rerun}"
            ) from err

    logger.info("Pushed %s to %s (commit %s)", folder, repo_url, commit.oid)
    return commit.commit_url


def _default_commit_message(output_dir: Path, repo_id: str) -> str:
    results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    name = repo_id.split("/")[-1]
    for split in ("test", "validation"):
        if f"{split}_accuracy" in results:
            return f"Upload {name}: {split} accuracy {results[f'{split}_accuracy']:.4f}"
    return f"Upload {name}"


__all__ = [
    "HubAccessError",
    "HubPushError",
    "check_output_dir",
    "check_push_access",
    "push_output_dir",
    "render_model_card",
    "rerun_command",
]
