"""Hub-compatible HTTP server on the loopback interface, for tests.

`LocalHub` serves the part of the Hugging Face Hub HTTP API that the unmodified clients
(`huggingface_hub` 2.4, `transformers` 5.25, `datasets` 5.2) use. They authenticate, create repos,
commit files (inline or through the Git LFS basic transfer), list trees, download files and
validate card metadata through it. Repos live in memory, and file contents live in a
content-addressed store inside the storage directory.

Clients must run with `HF_HUB_DISABLE_XET=1`: LocalHub has no Xet storage, and `huggingface_hub`
chooses Xet uploads from the installed `hf_xet` package alone, without asking the server.

Example:

    hub = LocalHub(tmp_dir).start()
    os.environ["HF_ENDPOINT"] = hub.url  # before huggingface_hub is imported
    ...
    hub.stop()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

logger = logging.getLogger(__name__)

WRITE_TOKEN = "hf_test_token"
READ_TOKEN = "hf_test_read_token"
DEFAULT_USER = "test-user"
DEFAULT_ORG = "test-org"

# URL plural -> repo type, as in `huggingface_hub.constants.REPO_TYPES_MAPPING`.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# A file above this size is always stored with LFS. `huggingface_hub` 2.4 reads regular files whole
# and assumes they are at most 5 MB (`CommitOperationAdd._local_oid`).
MAX_REGULAR_FILE_SIZE = 5 * 1024 * 1024

# The `.gitattributes` of a new repo: file types stored with LFS, as on the Hub.
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack"
    " *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors"
    " saved_model/**/* *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
    " *.jpg *.jpeg *.png *.webp *.gif *.mp3 *.wav *.flac *.ogg *.mp4"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in DEFAULT_LFS_PATTERNS)

# Licence ids accepted in card metadata: common SPDX-style ids used on the Hub, plus "other" and "unknown".
KNOWN_LICENSES = frozenset(
    """
    apache-2.0 mit openrail openrail++ bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl
    osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl llama2 llama3 llama3.1 llama3.2 gemma other unknown
    """.split()
)

# Task ids accepted as `pipeline_tag`: the Hub's task taxonomy, with "other".
KNOWN_PIPELINE_TAGS = frozenset(
    """
    text-classification token-classification table-question-answering question-answering
    zero-shot-classification translation summarization feature-extraction text-generation fill-mask
    sentence-similarity text-to-speech text-to-audio automatic-speech-recognition audio-to-audio
    audio-classification voice-activity-detection depth-estimation image-classification object-detection
    image-segmentation text-to-image image-to-text image-to-image image-to-video unconditional-image-generation
    video-classification reinforcement-learning robotics tabular-classification tabular-regression
    tabular-to-text table-to-text multiple-choice text-ranking text-retrieval time-series-forecasting
    text-to-video image-text-to-text visual-question-answering document-question-answering
    zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
    image-feature-extraction video-text-to-text keypoint-detection any-to-any other
    """.split()
)

TREE_PAGE_SIZE = 1000  # entries per page of `/tree`, as on the Hub
TREE_EXPAND_PAGE_SIZE = 50  # entries per page of `/tree?expand=true`
REPO_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
YAML_BLOCK_PATTERN = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def _utc_now() -> str:
    """Return the current time in the Hub's ISO 8601 format, e.g. `2026-01-31T12:00:00.000Z`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git_blob_oid(data: bytes) -> str:
    """Return the git object id (SHA-1) of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the Git LFS pointer file that git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


# ----------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """A user access token known to the server."""

    user: str
    role: str  # "read" or "write"
    name: str


@dataclass(frozen=True)
class StoredFile:
    """A file in a commit: its content is the object `sha256` in the object store."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # blob id of the content, or of the LFS pointer for LFS files

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))

    @property
    def remote_oid(self) -> str:
        """Id that `preupload` reports and the client compares with its local file: sha256 for LFS, else git."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    """A commit: the full file map of the repo at this point, and a link to its parent."""

    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repository:
    """A repo's history and refs. Branch names include pull-request refs (`refs/pr/1`)."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_request_count: int = 0
    lfs_objects: dict[str, int] = field(default_factory=dict)  # sha256 -> size of LFS objects uploaded to this repo

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        """Return the commit a branch, tag, full commit id or unique id prefix (7+ hex digits) points to."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                return self.commits[refs[revision[len(prefix) :]]]
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        return None

    def history(self, commit: Commit) -> list[Commit]:
        """Return `commit` and its ancestors, newest first."""
        commits = [commit]
        while commits[-1].parent is not None:
            commits.append(self.commits[commits[-1].parent])
        return commits


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it. `status` is None for a dropped connection."""

    method: str
    path: str
    query: str
    status: int | None
    injected: bool = False


@dataclass
class _FailureRule:
    remaining: int
    status: int | None  # None drops the connection without a response
    method: str | None
    path_contains: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


class HubError(Exception):
    """An error response, with the `X-Error-Code` header that `huggingface_hub` maps to an exception class."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


# ----------------------------------------------------------------------------------------------
# Git-style path patterns (.gitattributes and .gitignore)
# ----------------------------------------------------------------------------------------------


def _wildmatch_regex(pattern: str) -> re.Pattern:
    """Translate a git wildmatch pattern into a regex over repo paths.

    A pattern without a slash (other than a trailing one) matches a name at any depth. `**/`, `/**`
    and `*`, `?`, `[...]` follow gitignore(5).
    """
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.strip("/")
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            parts.append("/.*")
            i += 3
        elif pattern[i] == "*":
            parts.append(".*" if pattern.startswith("**", i) else "[^/]*")
            i += 2 if pattern.startswith("**", i) else 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            parts.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile(("" if anchored else "(?:.*/)?") + "".join(parts))


def lfs_patterns_from_gitattributes(content: str) -> list[re.Pattern]:
    """Return the patterns that `.gitattributes` assigns to the LFS filter."""
    patterns = []
    for line in content.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(_wildmatch_regex(fields[0]))
    return patterns


def is_ignored(path: str, gitignore: str) -> bool:
    """Tell whether `.gitignore` content excludes `path`, with negation and directory patterns."""
    ignored = False
    parents = [path.rsplit("/", depth)[0] for depth in range(path.count("/"), 0, -1)]
    for line in gitignore.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        regex = _wildmatch_regex(pattern)
        candidates = parents if pattern.endswith("/") else [*parents, path]
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# ----------------------------------------------------------------------------------------------
# Card metadata validation (`/api/validate-yaml`)
# ----------------------------------------------------------------------------------------------


def parse_card_metadata(content: str) -> Any:
    """Return the YAML metadata block of a card (None when there is none). Raises `yaml.YAMLError`."""
    match = YAML_BLOCK_PATTERN.match(content)
    return yaml.safe_load(match.group(1)) if match else None


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_string_or_list(metadata: dict, key: str, errors: list[str]) -> None:
    value = metadata.get(key)
    if value is not None and not isinstance(value, str) and not _is_string_list(value):
        errors.append(f'"{key}" must be a string or a list of strings, got {value!r}')


def _check_model_index(model_index: Any, errors: list[str]) -> None:
    """Check the `model-index` structure: names, then results with task, dataset and metrics."""
    if not isinstance(model_index, list):
        errors.append(f'"model-index" must be a list, got {type(model_index).__name__}')
        return
    for i, entry in enumerate(model_index):
        where = f"model-index[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{where} must be a mapping")
            continue
        if not isinstance(entry.get("name"), str):
            errors.append(f"{where}.name is required and must be a string")
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f"{where}.results is required and must be a list")
            continue
        for j, result in enumerate(results):
            _check_model_index_result(result, f"{where}.results[{j}]", errors)


def _check_model_index_result(result: Any, where: str, errors: list[str]) -> None:
    if not isinstance(result, dict):
        errors.append(f"{where} must be a mapping")
        return
    task = result.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str):
        errors.append(f"{where}.task.type is required and must be a string")
    dataset = result.get("dataset")
    if not isinstance(dataset, dict):
        errors.append(f"{where}.dataset is required and must be a mapping")
    else:
        for key in ("name", "type"):
            if not isinstance(dataset.get(key), str):
                errors.append(f"{where}.dataset.{key} is required and must be a string")
    metrics = result.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        errors.append(f"{where}.metrics is required and must be a non-empty list")
        return
    for k, metric in enumerate(metrics):
        if not isinstance(metric, dict):
            errors.append(f"{where}.metrics[{k}] must be a mapping")
            continue
        if not isinstance(metric.get("type"), str):
            errors.append(f"{where}.metrics[{k}].type is required and must be a string")
        if metric.get("value") is None:
            errors.append(f"{where}.metrics[{k}].value is required")


def validate_card_metadata(content: str, repo_type: str) -> tuple[list[str], list[str]]:
    """Validate the metadata of a README.md as the Hub does for the fields hf-mnist uses.

    Returns (errors, warnings). Unknown keys are accepted, as on the Hub.
    """
    try:
        metadata = parse_card_metadata(content)
    except yaml.YAMLError as err:
        return [f"metadata is not valid YAML: {err}"], []
    if metadata is None or metadata == {}:
        return [], ["empty or missing YAML metadata in repo card"]
    if not isinstance(metadata, dict):
        return [f"metadata must be a YAML mapping, got {type(metadata).__name__}"], []

    errors: list[str] = []
    licenses = metadata.get("license")
    if licenses is not None:
        for license_id in licenses if isinstance(licenses, list) else [licenses]:
            if license_id not in KNOWN_LICENSES:
                errors.append(f'"license" must be a known licence id or "other", got {license_id!r}')
    for key in ("language", "base_model"):
        _check_string_or_list(metadata, key, errors)
    if "tags" in metadata and metadata["tags"] is not None and not _is_string_list(metadata["tags"]):
        errors.append(f'"tags" must be a list of strings, got {metadata["tags"]!r}')

    if repo_type == "model":
        if "datasets" in metadata and not _is_string_list(metadata["datasets"]):
            errors.append(f'"datasets" must be a list of strings, got {metadata["datasets"]!r}')
        if "library_name" in metadata and not isinstance(metadata["library_name"], str):
            errors.append(f'"library_name" must be a string, got {metadata["library_name"]!r}')
        pipeline_tag = metadata.get("pipeline_tag")
        if pipeline_tag is not None and pipeline_tag not in KNOWN_PIPELINE_TAGS:
            errors.append(f'"pipeline_tag" must be a known task id, got {pipeline_tag!r}')
        if "model-index" in metadata:
            _check_model_index(metadata["model-index"], errors)
    elif repo_type == "dataset":
        if "task_categories" in metadata and not _is_string_list(metadata["task_categories"]):
            errors.append(f'"task_categories" must be a list of strings, got {metadata["task_categories"]!r}')
        configs = metadata.get("configs")
        if configs is not None:
            if not isinstance(configs, list) or not all(
                isinstance(config, dict) and isinstance(config.get("config_name"), str) for config in configs
            ):
                errors.append('"configs" must be a list of mappings, each with a string "config_name"')
    return errors, []


# ----------------------------------------------------------------------------------------------
# HTTP request and response
# ----------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message from http.server
    body: bytes
    params: dict[str, str]  # decoded path parameters from the route pattern

    def query_value(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def query_flag(self, name: str) -> bool:
        return (self.query_value(name) or "").lower() in ("1", "true")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as err:
            raise HubError(400, f"Request body is not valid JSON: {err}") from err


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    content_length: int | None = None  # for HEAD responses, which carry no body


def _json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(payload, default=str).encode(), headers or {})


# ----------------------------------------------------------------------------------------------
# Hub API
# ----------------------------------------------------------------------------------------------

_REPO = r"(?P<type>models|datasets|spaces)/(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_GIT_REPO = r"(?:(?P<type>datasets|spaces)/)?(?P<namespace>[^/]+)/(?P<name>[^/]+)"


class HubApi:
    """Endpoints of the Hub API over an in-memory repo store and an on-disk object store."""

    def __init__(self, storage_dir: Path, tokens: dict[str, TokenInfo], organizations: dict[str, list[str]]):
        self.base_url = ""  # set by LocalHub once the port is known
        self.objects_dir = storage_dir / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = tokens
        self.organizations = organizations
        self.tree_page_size = TREE_PAGE_SIZE
        self.repos: dict[tuple[str, str], Repository] = {}
        self.lock = threading.RLock()
        self._upload_secret = secrets.token_bytes(32)
        self.routes: list[tuple[str, re.Pattern, Callable[[Request], Response]]] = [
            (method, re.compile(pattern), handler)
            for method, pattern, handler in [
                ("GET", r"/api/whoami-v2", self.whoami),
                ("GET", r"/api/agent-harnesses", self.agent_harnesses),
                ("POST", r"/api/repos/create", self.create_repo),
                ("DELETE", r"/api/repos/delete", self.delete_repo),
                ("POST", r"/api/validate-yaml", self.validate_yaml),
                ("GET", rf"/api/{_REPO}(?:/revision/(?P<revision>[^/]+))?", self.repo_info),
                ("GET", rf"/api/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", self.tree),
                ("POST", rf"/api/{_REPO}/paths-info/(?P<revision>[^/]+)", self.paths_info),
                ("POST", rf"/api/{_REPO}/preupload/(?P<revision>[^/]+)", self.preupload),
                ("POST", rf"/api/{_REPO}/commit/(?P<revision>[^/]+)", self.commit),
                ("GET", rf"/api/{_REPO}/commits/(?P<revision>[^/]+)", self.list_commits),
                ("GET", rf"/api/{_REPO}/refs", self.refs),
                ("POST", rf"/api/{_REPO}/branch/(?P<branch>[^/]+)", self.create_branch),
                ("DELETE", rf"/api/{_REPO}/branch/(?P<branch>[^/]+)", self.delete_branch),
                ("POST", rf"/api/{_REPO}/tag/(?P<revision>[^/]+)", self.create_tag),
                ("GET", r"/api/datasets/(?P<namespace>[^/]+)/(?P<name>[^/]+)/parquet(?:/.*)?", self.parquet_export),
                ("POST", rf"/{_GIT_REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
                ("POST", rf"/{_GIT_REPO}\.git/info/lfs/objects/verify", self.lfs_verify),
                ("PUT", rf"/lfs-objects/{_REPO}/(?P<oid>[0-9a-f]{{64}})", self.lfs_upload),
                ("HEAD", rf"/{_GIT_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", self.resolve_file),
                ("GET", rf"/{_GIT_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", self.resolve_file),
            ]
        ]

    def match_route(self, method: str, path: str) -> tuple[Callable[[Request], Response], dict[str, str]] | None:
        """Return the endpoint for a request and its URL-decoded path parameters."""
        for route_method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return handler, params
        return None

    # --- authentication and repo lookup -------------------------------------------------------

    def authenticate(self, request: Request) -> TokenInfo | None:
        """Return the caller's token, None when anonymous. An unknown token is rejected, as on the Hub."""
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        token_info = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if token_info is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return token_info

    def _namespaces(self, caller: TokenInfo) -> set[str]:
        return {caller.user, *self.organizations.get(caller.user, [])}

    def _require_write(self, caller: TokenInfo | None, namespace: str) -> TokenInfo:
        if caller is None:
            raise HubError(401, "Missing token: this operation needs a write token in the Authorization header.")
        if caller.role != "write":
            raise HubError(403, f"Token '{caller.name}' is read-only and cannot modify repos.")
        if namespace not in self._namespaces(caller):
            raise HubError(403, f"User '{caller.user}' cannot write to namespace '{namespace}'.")
        return caller

    def _repo_type(self, request: Request) -> str:
        return REPO_TYPES[request.params.get("type") or "models"]

    def _get_repo(self, request: Request, *, write: bool = False) -> tuple[Repository, TokenInfo | None]:
        """Return the repo named in the URL, raising RepoNotFound when the caller may not see it."""
        caller = self.authenticate(request)
        repo_id = f"{request.params['namespace']}/{request.params['name']}"
        repo = self.repos.get((self._repo_type(request), repo_id))
        visible = repo is not None and (not repo.private or (caller and repo.namespace in self._namespaces(caller)))
        if not visible:
            status = 401 if caller is None else 404
            raise HubError(status, f"Repository {repo_id} not found.", "RepoNotFound")
        if write:
            self._require_write(caller, repo.namespace)
        return repo, caller

    def _get_commit(self, repo: Repository, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Revision '{revision}' not found in {repo.repo_id}.", "RevisionNotFound")
        return commit

    def _repo_url(self, repo: Repository) -> str:
        return f"{self.base_url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # --- object store --------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256[2:]

    def store_object(self, data: bytes) -> str:
        """Write `data` to the object store (atomically) and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
            tmp_path.write_bytes(data)
            tmp_path.replace(path)
        return sha256

    def read_object(self, sha256: str) -> bytes:
        return self.object_path(sha256).read_bytes()

    def _store_file(self, data: bytes, lfs: bool) -> StoredFile:
        sha256 = self.store_object(data)
        git_oid = _git_blob_oid(_lfs_pointer(sha256, len(data)) if lfs else data)
        return StoredFile(sha256=sha256, size=len(data), lfs=lfs, git_oid=git_oid)

    # --- commits -------------------------------------------------------------------------------

    def _new_commit(
        self,
        repo: Repository,
        parent: Commit | None,
        files: dict[str, StoredFile],
        *,
        title: str,
        message: str,
        author: str,
    ) -> Commit:
        date = _utc_now()
        seed = json.dumps(
            [
                parent.oid if parent else None,
                title,
                date,
                sorted((path, stored.git_oid) for path, stored in files.items()),
                uuid.uuid4().hex,
            ]
        )
        commit = Commit(
            hashlib.sha1(seed.encode()).hexdigest(), parent.oid if parent else None, title, message, author, date, files
        )
        repo.commits[commit.oid] = commit
        return commit

    def new_repository(self, repo_type: str, repo_id: str, private: bool, author: str) -> Repository:
        """Create a repo whose first commit contains the default `.gitattributes`, as on the Hub."""
        repo = Repository(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_utc_now())
        gitattributes = self._store_file(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
        commit = self._new_commit(
            repo, None, {".gitattributes": gitattributes}, title="initial commit", message="", author=author
        )
        repo.branches["main"] = commit.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _last_commit_touching(self, repo: Repository, commit: Commit, path: str, is_dir: bool) -> Commit:
        """Return the newest commit in `commit`'s history that changed `path` (or a file under it)."""

        def snapshot(files: dict[str, StoredFile]) -> dict[str, str]:
            if not is_dir:
                return {path: files[path].git_oid} if path in files else {}
            prefix = f"{path}/" if path else ""
            return {name: stored.git_oid for name, stored in files.items() if name.startswith(prefix)}

        history = repo.history(commit)
        for current, parent in pairwise(history):
            if snapshot(current.files) != snapshot(parent.files):
                return current
        return history[-1]

    # --- tree entries ---------------------------------------------------------------------------

    @staticmethod
    def _directories(files: Iterable[str]) -> set[str]:
        directories = set()
        for path in files:
            parts = path.split("/")[:-1]
            directories.update("/".join(parts[: depth + 1]) for depth in range(len(parts)))
        return directories

    def _file_entry(self, path: str, stored: StoredFile) -> dict:
        entry: dict[str, Any] = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": stored.pointer_size}
        return entry

    def _directory_entry(self, commit: Commit, path: str) -> dict:
        children = sorted(
            (name, stored.git_oid) for name, stored in commit.files.items() if name.startswith(f"{path}/")
        )
        tree_oid = hashlib.sha1(json.dumps(children).encode()).hexdigest()
        return {"type": "directory", "oid": tree_oid, "size": 0, "path": path}

    def _expand_entry(self, repo: Repository, commit: Commit, entry: dict) -> dict:
        """Add the last commit (and a clean security scan for files), as `expand=true` requests."""
        last = self._last_commit_touching(repo, commit, entry["path"], entry["type"] == "directory")
        entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        if entry["type"] == "file":
            entry["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
        return entry

    def _entry(self, repo: Repository, commit: Commit, path: str, expand: bool, directories: set[str]) -> dict | None:
        """Return the tree entry of a file or directory, None when the path does not exist."""
        if path in commit.files:
            entry = self._file_entry(path, commit.files[path])
        elif path in directories:
            entry = self._directory_entry(commit, path)
        else:
            return None
        return self._expand_entry(repo, commit, entry) if expand else entry

    def _paginate(self, request: Request, items: list, page_size: int) -> Response:
        """Return one page of `items`, with a `Link: <...>; rel="next"` header when more remain."""
        cursor = request.query_value("cursor", "0") or "0"
        if not cursor.isdigit():
            raise HubError(400, f"Invalid pagination cursor {cursor!r}: follow the Link header of the previous page.")
        start = int(cursor)
        headers = {}
        if start + page_size < len(items):
            query = {key: values for key, values in request.query.items() if key != "cursor"}
            query["cursor"] = [str(start + page_size)]
            next_url = f"{self.base_url}{request.path}?{urlencode(query, doseq=True)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json_response(items[start : start + page_size], headers=headers)

    # --- endpoints: account and repos -----------------------------------------------------------

    def whoami(self, request: Request) -> Response:
        caller = self.authenticate(request)
        if caller is None:
            raise HubError(401, "Authorization header is missing: pass a user access token.")
        organizations = self.organizations.get(caller.user, [])
        return _json_response(
            {
                "type": "user",
                "id": hashlib.sha1(caller.user.encode()).hexdigest()[:24],
                "name": caller.user,
                "fullname": caller.user.replace("-", " ").title(),
                "email": f"{caller.user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in organizations],
                "auth": {"type": "access_token", "accessToken": {"displayName": caller.name, "role": caller.role}},
            }
        )

    def agent_harnesses(self, request: Request) -> Response:
        # `huggingface_hub` fetches this registry while building its user agent when telemetry is on.
        return _json_response({"standardEnvVars": [], "harnesses": {}})

    def create_repo(self, request: Request) -> Response:
        caller = self.authenticate(request)
        payload = request.json() or {}
        repo_type = payload.get("type") or "model"
        name = payload.get("name")
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type {repo_type!r}: expected one of {sorted(URL_PREFIXES)}.")
        if (
            not isinstance(name, str)
            or not REPO_NAME_PATTERN.fullmatch(name)
            or ".." in name
            or "--" in name
            or name.endswith(".git")
        ):
            raise HubError(400, f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.', up to 96.")
        namespace = payload.get("organization") or (caller.user if caller else None)
        if namespace is None:
            raise HubError(401, "Missing token: this operation needs a write token in the Authorization header.")
        self._require_write(caller, namespace)

        repo_id = f"{namespace}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self.lock:
            existing = self.repos.get((repo_type, repo_id))
            if existing is not None:
                # `HfApi.create_repo(exist_ok=True)` reads the url from this 409 body.
                return _json_response(
                    {"error": f"You already created this {repo_type} repo", "url": self._repo_url(existing)}, 409
                )
            repo = self.new_repository(repo_type, repo_id, private, caller.user)
        return _json_response({"url": self._repo_url(repo), "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def delete_repo(self, request: Request) -> Response:
        caller = self.authenticate(request)
        payload = request.json() or {}
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or (caller.user if caller else "")
        repo_id = f"{namespace}/{payload.get('name')}"
        self._require_write(caller, namespace)
        with self.lock:
            if (repo_type, repo_id) not in self.repos:
                raise HubError(404, f"Repository {repo_id} not found.", "RepoNotFound")
            del self.repos[(repo_type, repo_id)]
        return _json_response({})

    def validate_yaml(self, request: Request) -> Response:
        payload = request.json() or {}
        errors, warnings = validate_card_metadata(payload.get("content") or "", payload.get("repoType") or "model")
        status = 400 if errors else 200
        # `RepoCard.validate` requests text/plain and raises ValueError(response.text) on a 400;
        # `HfApi._validate_yaml` reads JSON {"errors": [...], "warnings": [...]}.
        accept = request.headers.get("Accept", "")
        if "text/plain" in accept and "json" not in accept:
            return Response(status, "\n".join(errors).encode(), content_type="text/plain; charset=utf-8")
        return _json_response(
            {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}, status
        )

    def parquet_export(self, request: Request) -> Response:
        raise HubError(404, "LocalHub has no parquet export of datasets: read the dataset's own files.")

    # --- endpoints: repo information ------------------------------------------------------------

    def repo_info(self, request: Request) -> Response:
        with self.lock:
            repo, _ = self._get_repo(request)
            commit = self._get_commit(repo, request.params.get("revision", "main"))
            info = self._repo_info_payload(repo, commit, files_metadata=request.query_flag("blobs"))
        expand = request.query.get("expand") or request.query.get("expand[]")
        if expand:
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        return _json_response(info)

    def _repo_info_payload(self, repo: Repository, commit: Commit, files_metadata: bool) -> dict:
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if files_metadata:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": stored.pointer_size}
            siblings.append(sibling)

        card_data = None
        if "README.md" in commit.files:
            try:
                card_data = parse_card_metadata(self.read_object(commit.files["README.md"].sha256).decode())
            except (yaml.YAMLError, UnicodeDecodeError):
                card_data = None
        card_data = card_data if isinstance(card_data, dict) else None

        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card_data or {}).get("tags") or []),
            "cardData": card_data,
            "siblings": siblings,
            "usedStorage": sum(stored.size for stored in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = (card_data or {}).get("library_name")
            info["pipeline_tag"] = (card_data or {}).get("pipeline_tag")
            info["config"] = self._model_config_summary(commit)
        elif repo.repo_type == "space":
            info["sdk"] = (card_data or {}).get("sdk")
        return info

    def _model_config_summary(self, commit: Commit) -> dict | None:
        """Return `architectures` and `model_type` from config.json, as the Hub's model info does."""
        if "config.json" not in commit.files:
            return None
        try:
            config = json.loads(self.read_object(commit.files["config.json"].sha256))
        except ValueError:
            return None
        if not isinstance(config, dict):
            return None
        return {key: config[key] for key in ("architectures", "model_type") if key in config}

    def tree(self, request: Request) -> Response:
        expand = request.query_flag("expand")
        with self.lock:
            repo, _ = self._get_repo(request)
            commit = self._get_commit(repo, request.params["revision"])
            root = request.params.get("path", "").strip("/")
            directories = self._directories(commit.files)
            if root and root not in directories:
                raise HubError(
                    404,
                    f"Directory '{root}' not found in revision {commit.oid}.",
                    "EntryNotFound",
                    {"X-Repo-Commit": commit.oid},
                )
            prefix = f"{root}/" if root else ""
            names = [name for name in [*commit.files, *directories] if name.startswith(prefix)]
            if not request.query_flag("recursive"):
                names = [name for name in names if "/" not in name[len(prefix) :]]
            entries = [self._entry(repo, commit, name, expand, directories) for name in sorted(names)]
        page_size = TREE_EXPAND_PAGE_SIZE if expand else self.tree_page_size
        return self._paginate(request, entries, page_size)

    def paths_info(self, request: Request) -> Response:
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        with self.lock:
            repo, _ = self._get_repo(request)
            commit = self._get_commit(repo, request.params["revision"])
            directories = self._directories(commit.files)
            paths = [path.strip("/") for path in form.get("paths", [])]
            entries = [self._entry(repo, commit, path, expand, directories) for path in paths]
        return _json_response([entry for entry in entries if entry is not None])

    def list_commits(self, request: Request) -> Response:
        with self.lock:
            repo, _ = self._get_repo(request)
            history = repo.history(self._get_commit(repo, request.params["revision"]))
        items = [
            {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
            for c in history
        ]
        return self._paginate(request, items, TREE_EXPAND_PAGE_SIZE)

    def refs(self, request: Request) -> Response:
        with self.lock:
            repo, _ = self._get_repo(request)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in repo.branches.items()
                if not name.startswith("refs/pr/")
            ]
            pull_requests = [
                {"name": name, "ref": name, "targetCommit": oid}
                for name, oid in repo.branches.items()
                if name.startswith("refs/pr/")
            ]
            tags = [{"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid} for name, oid in repo.tags.items()]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
        if request.query_value("include_prs"):
            payload["pullRequests"] = pull_requests
        return _json_response(payload)

    # --- endpoints: branches and tags -----------------------------------------------------------

    def create_branch(self, request: Request) -> Response:
        branch = request.params["branch"]
        payload = request.json() or {}
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            if branch in repo.branches:
                raise HubError(409, f"Branch '{branch}' already exists.")
            if branch.startswith("refs/") or ".." in branch or not branch.strip():
                raise HubError(400, f"Invalid branch name {branch!r}.")
            start = self._get_commit(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return _json_response({})

    def delete_branch(self, request: Request) -> Response:
        branch = request.params["branch"]
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            if branch not in repo.branches:
                raise HubError(404, f"Branch '{branch}' not found.", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "The default branch 'main' cannot be deleted.")
            del repo.branches[branch]
        return _json_response({})

    def create_tag(self, request: Request) -> Response:
        payload = request.json() or {}
        tag = payload.get("tag")
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            commit = self._get_commit(repo, request.params["revision"])
            if not isinstance(tag, str) or not tag.strip():
                raise HubError(400, f"Invalid tag name {tag!r}.")
            if tag in repo.tags:
                raise HubError(409, f"Tag '{tag}' already exists.")
            repo.tags[tag] = commit.oid
        return _json_response({})

    # --- endpoints: upload ---------------------------------------------------------------------

    def _upload_mode(self, path: str, size: int, sample: bytes, lfs_patterns: list[re.Pattern]) -> str:
        """Choose LFS for large files, binary content (a NUL byte in the sample) and `.gitattributes` matches."""
        if size > MAX_REGULAR_FILE_SIZE or b"\0" in sample:
            return "lfs"
        if any(pattern.fullmatch(path) for pattern in lfs_patterns):
            return "lfs"
        return "regular"

    def preupload(self, request: Request) -> Response:
        payload = request.json() or {}
        files = payload.get("files")
        if not isinstance(files, list):
            raise HubError(400, 'Preupload body must contain a "files" list.')
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            commit = self._get_commit(repo, request.params["revision"])
            gitattributes = commit.files.get(".gitattributes")
            lfs_patterns = lfs_patterns_from_gitattributes(
                self.read_object(gitattributes.sha256).decode() if gitattributes else ""
            )
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in commit.files:
                gitignore = self.read_object(commit.files[".gitignore"].sha256).decode()

            answers = []
            for file in files:
                path, size = file.get("path"), file.get("size")
                if not isinstance(path, str) or not isinstance(size, int):
                    raise HubError(400, f"Each preupload file needs a string path and an integer size, got {file!r}.")
                sample = base64.b64decode(file.get("sample") or "")
                existing = commit.files.get(path)
                answers.append(
                    {
                        "path": path,
                        "uploadMode": self._upload_mode(path, size, sample, lfs_patterns),
                        "shouldIgnore": bool(gitignore) and is_ignored(path, gitignore),
                        "oid": existing.remote_oid if existing else None,
                    }
                )
        return _json_response({"files": answers, "commitOid": commit.oid})

    def _upload_signature(self, repo: Repository, oid: str, size: int | str) -> str:
        message = f"{repo.repo_type}/{repo.repo_id}:{oid}:{size}".encode()
        return hmac.new(self._upload_secret, message, hashlib.sha256).hexdigest()

    def _upload_href(self, repo: Repository, oid: str, size: int) -> str:
        """Return a pre-signed PUT URL for one LFS object, standing in for an object-storage URL."""
        query = urlencode({"size": size, "signature": self._upload_signature(repo, oid, size)})
        return f"{self.base_url}/lfs-objects/{repo.repo_type}s/{repo.repo_id}/{oid}?{query}"

    def lfs_batch(self, request: Request) -> Response:
        """Return Git LFS batch actions: an upload for each object that this repo does not contain yet."""
        payload = request.json() or {}
        if payload.get("operation") != "upload":
            raise HubError(400, f"LocalHub supports only the LFS 'upload' operation, got {payload.get('operation')!r}.")
        if "basic" not in (payload.get("transfers") or ["basic"]):
            raise HubError(400, "LocalHub supports only the 'basic' LFS transfer.")

        objects = []
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            verify_href = f"{self._repo_url(repo)}.git/info/lfs/objects/verify"
            for item in payload.get("objects") or []:
                oid, size = item.get("oid"), item.get("size")
                if not _is_sha256(oid) or not isinstance(size, int) or size < 0:
                    error = {"code": 422, "message": "oid must be a sha256 hex digest and size a non-negative int"}
                    objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0, "error": error})
                elif repo.lfs_objects.get(oid) == size:
                    objects.append({"oid": oid, "size": size})  # no actions: the repo contains it already
                else:
                    actions = {"upload": {"href": self._upload_href(repo, oid, size)}, "verify": {"href": verify_href}}
                    objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return Response(200, body, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, request: Request) -> Response:
        """Store an LFS object sent to a pre-signed PUT URL, whose signature replaces authentication."""
        oid = request.params["oid"]
        size = request.query_value("size", "") or ""
        with self.lock:
            repo = self.repos.get((self._repo_type(request), f"{request.params['namespace']}/{request.params['name']}"))
        if repo is None:
            raise HubError(404, "The repo of this upload URL no longer exists.", "RepoNotFound")
        signature = request.query_value("signature", "") or ""
        if not hmac.compare_digest(self._upload_signature(repo, oid, size), signature):
            raise HubError(403, "Invalid or missing upload signature: request a new upload URL from the LFS batch API.")
        if len(request.body) != int(size):
            raise HubError(400, f"Upload size mismatch for {oid}: expected {size} bytes, received {len(request.body)}.")
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"Upload content does not match oid {oid}.")
        self.store_object(request.body)
        with self.lock:
            repo.lfs_objects[oid] = len(request.body)
        return Response(200, b"", {"ETag": f'"{oid}"'}, content_type="text/plain")

    def lfs_verify(self, request: Request) -> Response:
        payload = request.json() or {}
        oid, size = payload.get("oid"), payload.get("size")
        with self.lock:
            repo, _ = self._get_repo(request, write=True)
            if not _is_sha256(oid) or repo.lfs_objects.get(oid) != size:
                raise HubError(404, f"LFS object {oid} of size {size} was not uploaded to {repo.repo_id}.")
        return _json_response({"success": True})

    def commit(self, request: Request) -> Response:
        lines = [line for line in request.body.splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except ValueError as err:
            raise HubError(400, f"Commit body is not valid NDJSON: {err}") from err
        if not items or items[0].get("key") != "header":
            raise HubError(400, 'The first line of a commit must be {"key": "header", ...}.')
        header = items[0].get("value") or {}
        create_pr = request.query_value("create_pr") == "1"

        with self.lock:
            repo, caller = self._get_repo(request, write=True)
            revision = request.params["revision"]
            if revision not in repo.branches:
                self._get_commit(repo, revision)  # raises RevisionNotFound for unknown revisions
                raise HubError(400, f"Revision '{revision}' is not a branch: commits go to branches only.")
            head = repo.commits[repo.branches[revision]]
            parent_commit = header.get("parentCommit")
            if parent_commit and not create_pr and parent_commit != head.oid:
                raise HubError(412, f"Branch '{revision}' has moved to {head.oid} since parent commit {parent_commit}.")

            files = self._apply_operations(repo, dict(head.files), items[1:])
            if "README.md" in files and files.get("README.md") != head.files.get("README.md"):
                readme = self.read_object(files["README.md"].sha256).decode(errors="replace")
                errors, _ = validate_card_metadata(readme, repo.repo_type)
                if errors:
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))

            branch = revision
            if create_pr:
                repo.pull_request_count += 1
                branch = f"refs/pr/{repo.pull_request_count}"
            commit = self._new_commit(
                repo,
                head,
                files,
                title=header.get("summary") or "",
                message=header.get("description") or "",
                author=caller.user,
            )
            repo.branches[branch] = commit.oid

        answer = {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
            "hookOutput": "",
        }
        if create_pr:
            answer["pullRequestUrl"] = f"{self._repo_url(repo)}/discussions/{repo.pull_request_count}"
        return _json_response(answer)

    def _apply_operations(
        self, repo: Repository, files: dict[str, StoredFile], operations: list[dict]
    ) -> dict[str, StoredFile]:
        """Apply the NDJSON operations of a commit to a file map and return it."""
        for operation in operations:
            key, value = operation.get("key"), operation.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"Invalid path in commit operation {key!r}: {path!r}.")
            if path == ".git" or path.startswith(".git/"):
                raise HubError(400, f"Paths inside .git cannot be committed: {path!r}.")

            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}: use base64.")
                files[path] = self._store_file(base64.b64decode(value.get("content") or ""), lfs=False)
            elif key == "lfsFile":
                oid = value.get("oid")
                uploaded_size = repo.lfs_objects.get(oid) if _is_sha256(oid) else None
                if uploaded_size is None:
                    raise HubError(
                        400, f"LFS object {oid} for {path} was not uploaded to this repo: use the LFS batch API."
                    )
                if value.get("size") not in (None, uploaded_size):
                    raise HubError(
                        400, f"Size {value.get('size')} for {path} does not match the uploaded {uploaded_size}."
                    )
                pointer_oid = _git_blob_oid(_lfs_pointer(oid, uploaded_size))
                files[path] = StoredFile(oid, uploaded_size, lfs=True, git_oid=pointer_oid)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                matching = [name for name in files if name.startswith(prefix)]
                if not matching:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for name in matching:
                    del files[name]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}.")
        return files

    # --- endpoints: download -------------------------------------------------------------------

    def resolve_file(self, request: Request) -> Response:
        with self.lock:
            repo, _ = self._get_repo(request)
            commit = self._get_commit(repo, request.params["revision"])
            path = request.params["path"]
            stored = commit.files.get(path)
            if stored is None:
                raise HubError(
                    404,
                    f"Entry '{path}' not found in revision {commit.oid}.",
                    "EntryNotFound",
                    {"X-Repo-Commit": commit.oid},
                )

        etag = stored.sha256 if stored.lfs else stored.git_oid
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})

        range_header = request.headers.get("Range")
        start, end = self._byte_range(range_header, stored.size, headers)
        status = 206 if range_header else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
        length = max(end - start + 1, 0)
        if request.method == "HEAD":
            return Response(status, b"", headers, "application/octet-stream", content_length=length)
        with self.object_path(stored.sha256).open("rb") as file:
            file.seek(start)
            body = file.read(length)
        return Response(status, body, headers, "application/octet-stream")

    @staticmethod
    def _byte_range(range_header: str | None, size: int, headers: dict) -> tuple[int, int]:
        """Return the inclusive byte range that a `Range: bytes=...` header requests (the whole file without one)."""
        if not range_header:
            return 0, size - 1
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header)
        if match is None or match.groups() == ("", ""):
            raise HubError(
                416,
                f"Unsupported Range header {range_header!r}: use a single 'bytes=start-end'.",
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise HubError(
                416,
                f"Range {range_header!r} is outside the file of {size} bytes.",
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        return start, end


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------


class _HubRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    timeout = 60  # seconds an idle keep-alive connection stays open
    server: _HubHTTPServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailer headers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        body = self._read_body()

        rule = hub._take_failure(self.command, split.path)
        if rule is not None:
            if rule.status is None:
                logger.info("Dropping connection for %s %s (injected failure)", self.command, split.path)
                hub._record(RecordedRequest(self.command, split.path, split.query, None, injected=True))
                self.close_connection = True
                return
            logger.info("Responding to %s %s with %d (injected failure)", self.command, split.path, rule.status)
            response = _json_response({"error": f"Injected failure {rule.status} from LocalHub"}, rule.status)
            hub._record(RecordedRequest(self.command, split.path, split.query, rule.status, injected=True))
            self._send(response)
            return

        route = hub.api.match_route(self.command, split.path)
        if route is None:
            logger.warning(
                "LocalHub has no route for %s %s: a client called an endpoint that tests/hub_server.py does not "
                "implement yet",
                self.command,
                split.path,
            )
            response = _json_response({"error": f"LocalHub does not implement {self.command} {split.path}"}, 404)
            hub._record_unknown(f"{self.command} {split.path}")
        else:
            handler, params = route
            request = Request(
                self.command, split.path, parse_qs(split.query, keep_blank_values=True), self.headers, body, params
            )
            try:
                response = handler(request)
            except HubError as err:
                logger.info(
                    "%s %s -> %d %s: %s", self.command, split.path, err.status, err.error_code or "", err.message
                )
                response = self._error_response(err)
            except Exception:  # a server bug must not kill the connection thread silently
                logger.exception("LocalHub failed on %s %s", self.command, self.path)
                response = _json_response({"error": "LocalHub internal error, see the test log"}, 500)
        # Record before sending the response, so the log already contains this request when the client's call returns.
        hub._record(RecordedRequest(self.command, split.path, split.query, response.status))
        self._send(response)

    @staticmethod
    def _error_response(err: HubError) -> Response:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        return _json_response({"error": err.message}, err.status, headers)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        length = response.content_length if response.content_length is not None else len(response.body)
        self.send_header("Content-Length", str(length))
        request_id = self.headers.get("X-Amzn-Trace-Id")
        if request_id:
            self.send_header("X-Request-Id", request_id)
        for name, value in response.headers.items():
            # Header values must be latin-1 on the wire; error messages may quote any path.
            self.send_header(name, value.encode("latin-1", "replace").decode("latin-1").replace("\n", " "))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class _HubHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    hub: LocalHub


# ----------------------------------------------------------------------------------------------
# Public interface
# ----------------------------------------------------------------------------------------------


class LocalHub:
    """A Hub-compatible server on 127.0.0.1 with an ephemeral port, served from a background thread.

    Tokens: `token` (write access for `user`, who also writes to `org`) and `read_token` (read only).
    Failure injection: `fail_next` responds to the next matching requests with an error status, and
    `drop_next` closes their connections without a response. Every request is recorded in `requests`.
    """

    token = WRITE_TOKEN
    read_token = READ_TOKEN
    user = DEFAULT_USER
    org = DEFAULT_ORG

    def __init__(self, storage_dir: str | Path, *, tree_page_size: int = TREE_PAGE_SIZE):
        self.storage_dir = Path(storage_dir)
        self.api = HubApi(
            self.storage_dir,
            tokens={
                WRITE_TOKEN: TokenInfo(DEFAULT_USER, "write", "local-write"),
                READ_TOKEN: TokenInfo(DEFAULT_USER, "read", "local-read"),
            },
            organizations={DEFAULT_USER: [DEFAULT_ORG]},
        )
        self.api.tree_page_size = tree_page_size
        self._server: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._unknown: list[str] = []
        self._failures: list[_FailureRule] = []
        self._repo_counter = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalHub:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("LocalHub is already running: call stop() before start().")
        self._server = _HubHTTPServer(("127.0.0.1", 0), _HubRequestHandler)
        self._server.hub = self
        self.api.base_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="LocalHub", daemon=True)
        self._thread.start()
        logger.info("LocalHub serving %s from %s", self.url, self.storage_dir)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket. Stored repos stay in memory."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        logger.info("LocalHub stopped serving %s", self.url)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the server, the value for `HF_ENDPOINT` (e.g. `http://127.0.0.1:41234`)."""
        if self._server is None:
            raise RuntimeError("LocalHub is not running: call start() first.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- failure injection ---------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, status: int = 500, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Respond to the next `count` matching requests with `status` instead of handling them."""
        self._add_failure(_FailureRule(count, status, method, path_contains))

    def drop_next(self, count: int = 1, *, method: str | None = None, path_contains: str | None = None) -> None:
        """Close the connection of the next `count` matching requests without sending a response."""
        self._add_failure(_FailureRule(count, None, method, path_contains))

    def clear_failures(self) -> None:
        with self._state_lock:
            self._failures.clear()

    def _add_failure(self, rule: _FailureRule) -> None:
        if rule.remaining < 1:
            raise ValueError(f"count must be at least 1, got {rule.remaining}")
        with self._state_lock:
            self._failures.append(rule)

    def _take_failure(self, method: str, path: str) -> _FailureRule | None:
        with self._state_lock:
            for rule in self._failures:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._failures.remove(rule)
                    return rule
        return None

    # --- request log ---------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._state_lock:
            self._requests.append(request)

    def _record_unknown(self, route: str) -> None:
        with self._state_lock:
            self._unknown.append(route)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received since start or the last `reset_requests()`, oldest first."""
        with self._state_lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._state_lock:
            return len(self._requests)

    @property
    def unknown_requests(self) -> list[str]:
        """`METHOD path` of requests that matched no route (rejected with 404 and logged as warnings)."""
        with self._state_lock:
            return list(self._unknown)

    def reset_requests(self) -> None:
        with self._state_lock:
            self._requests.clear()
            self._unknown.clear()

    # --- repo helpers for tests ----------------------------------------------------------------

    def new_repo_id(self, name_hint: str = "repo", *, namespace: str | None = None) -> str:
        """Return an unused repo id in `namespace` (the default user's by default), e.g. `test-user/model-3`."""
        with self._state_lock:
            self._repo_counter += 1
            counter = self._repo_counter
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name_hint).strip("-._")[:80] or "repo"
        return f"{namespace or self.user}/{name}-{counter}"

    def _repository(self, repo_id: str, repo_type: str) -> Repository:
        repo = self.api.repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"LocalHub has no {repo_type} repo {repo_id!r}")
        return repo

    def commit_ids(self, repo_id: str, *, repo_type: str = "model", revision: str = "main") -> list[str]:
        """Return the commit ids reachable from `revision`, newest first."""
        with self.api.lock:
            repo = self._repository(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_type} repo {repo_id!r} has no revision {revision!r}")
            return [c.oid for c in repo.history(commit)]

    def read_file(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str = "main") -> bytes:
        """Return the stored content of a file at a revision, bypassing HTTP."""
        with self.api.lock:
            repo = self._repository(repo_id, repo_type)
            commit = repo.resolve(revision)
            if commit is None or path not in commit.files:
                raise KeyError(f"{repo_type} repo {repo_id!r} has no file {path!r} at {revision!r}")
            return self.api.read_object(commit.files[path].sha256)

    def is_lfs(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str = "main") -> bool:
        """Tell whether a file at a revision is stored as an LFS object."""
        with self.api.lock:
            commit = self._repository(repo_id, repo_type).resolve(revision)
            if commit is None or path not in commit.files:
                raise KeyError(f"{repo_type} repo {repo_id!r} has no file {path!r} at {revision!r}")
            return commit.files[path].lfs


__all__ = ["LocalHub", "RecordedRequest", "HubError", "validate_card_metadata", "WRITE_TOKEN", "READ_TOKEN"]
