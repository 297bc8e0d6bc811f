"""The local Hub in tests/hub_server.py, driven by the unmodified huggingface_hub, transformers and datasets."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx2
import numpy as np
import pytest
from hub_server import LocalHub, RecordedRequest
from huggingface_hub import HfApi, HfFileSystem, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import get_session
from safetensors.numpy import save_file

GOOD_CARD = """---
license: mit
library_name: transformers
pipeline_tag: image-classification
datasets:
- mnist
model-index:
- name: tiny-mnist
  results:
  - task:
      type: image-classification
    dataset:
      name: MNIST
      type: mnist
    metrics:
    - type: accuracy
      value: 0.98
---
# Tiny MNIST model
"""


def _calls(requests: list[RecordedRequest]) -> list[str]:
    """Return `METHOD path -> status` for each request, with commit ids and LFS oids left in."""
    return [f"{request.method} {request.path} -> {request.status}" for request in requests]


def _write_small_folder(folder: Path) -> dict[str, bytes]:
    """Write a text file, a small binary file and a safetensors file; return their contents by repo path."""
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("three small files\n")
    (folder / "data" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    save_file({"weight": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(folder / "model.safetensors"))
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def uploaded_repo(hub: LocalHub, hub_token: str, tmp_path: Path) -> tuple[str, Path, dict[str, bytes]]:
    """A model repo holding the small folder: (repo id, local folder, contents by repo path)."""
    repo_id = hub.new_repo_id("folder")
    folder = tmp_path / "upload"
    contents = _write_small_folder(folder)
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(repo_id=repo_id, folder_path=folder)
    hub.reset_requests()
    return repo_id, folder, contents


# --- authentication and repos --------------------------------------------------------------------


def test_whoami_valid_token(hub: LocalHub) -> None:
    info = HfApi().whoami(token=hub.token)

    assert info["type"] == "user"
    assert info["name"] == hub.user
    assert [org["name"] for org in info["orgs"]] == [hub.org]
    assert info["auth"]["accessToken"]["role"] == "write"


def test_whoami_invalid_token(hub: LocalHub) -> None:
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as error:
        HfApi().whoami(token="hf_not_a_known_token")

    assert error.value.response.status_code == 401


def test_create_repo_twice_needs_exist_ok(hub: LocalHub, hub_token: str) -> None:
    repo_id = hub.new_repo_id("twice")

    url = HfApi().create_repo(repo_id)
    url_again = HfApi().create_repo(repo_id, exist_ok=True)

    assert url == f"{hub.url}/{repo_id}"
    assert url_again.repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as error:
        HfApi().create_repo(repo_id)
    assert error.value.response.status_code == 409


def test_create_repo_without_token_rejected(hub: LocalHub) -> None:
    with pytest.raises(HfHubHTTPError) as error:
        HfApi().create_repo(hub.new_repo_id("anonymous"))

    assert error.value.response.status_code == 401


def test_create_repo_with_read_token_rejected(hub: LocalHub) -> None:
    with pytest.raises(HfHubHTTPError) as error:
        HfApi().create_repo(hub.new_repo_id("read-only"), token=hub.read_token)

    assert error.value.response.status_code == 403


def test_private_repo_hidden_without_token(hub: LocalHub) -> None:
    repo_id = hub.new_repo_id("private")
    HfApi().create_repo(repo_id, private=True, token=hub.token)

    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(repo_id, token=False)
    assert HfApi().model_info(repo_id, token=hub.token).private is True


def test_new_repo_holds_gitattributes_commit(hub: LocalHub, hub_token: str) -> None:
    repo_id = hub.new_repo_id("fresh")
    HfApi().create_repo(repo_id)

    info = HfApi().model_info(repo_id)

    assert [sibling.rfilename for sibling in info.siblings] == [".gitattributes"]
    assert info.sha == hub.commit_ids(repo_id)[0]
    assert len(hub.commit_ids(repo_id)) == 1


# --- upload and download -------------------------------------------------------------------------


def test_upload_folder_download_round_trip(hub: LocalHub, uploaded_repo, tmp_path: Path) -> None:
    repo_id, _, contents = uploaded_repo

    for path, data in contents.items():
        local_path = hf_hub_download(repo_id, path, cache_dir=tmp_path / "fresh-cache")
        assert Path(local_path).read_bytes() == data, path
    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "snapshot-cache"))
    for path, data in contents.items():
        assert (snapshot / path).read_bytes() == data, path
    assert hub.unknown_requests == []


def test_upload_folder_lfs_for_binary_files(hub: LocalHub, uploaded_repo) -> None:
    repo_id, _, _ = uploaded_repo

    assert hub.is_lfs(repo_id, "notes.txt") is False
    assert hub.is_lfs(repo_id, "data/blob.bin") is True
    assert hub.is_lfs(repo_id, "model.safetensors") is True


def test_upload_folder_sends_lfs_through_batch(hub: LocalHub, hub_token: str, tmp_path: Path) -> None:
    repo_id = hub.new_repo_id("lfs")
    contents = _write_small_folder(tmp_path / "upload")
    HfApi().create_repo(repo_id)
    hub.reset_requests()

    HfApi().upload_folder(repo_id=repo_id, folder_path=tmp_path / "upload")

    calls = _calls(hub.requests)
    oids = [hashlib.sha256(contents[path]).hexdigest() for path in ("data/blob.bin", "model.safetensors")]
    assert calls[:2] == [
        f"POST /api/models/{repo_id}/preupload/main -> 200",
        f"POST /{repo_id}.git/info/lfs/objects/batch -> 200",
    ]
    # The two LFS uploads run in threads, so their PUT and verify calls interleave.
    assert sorted(calls[2:-1]) == sorted(
        [
            *(f"PUT /lfs-objects/models/{repo_id}/{oid} -> 200" for oid in oids),
            *[f"POST /{repo_id}.git/info/lfs/objects/verify -> 200"] * 2,
        ]
    )
    assert calls[-1] == f"POST /api/models/{repo_id}/commit/main -> 200"


def test_upload_folder_twice_makes_no_commit(hub: LocalHub, uploaded_repo) -> None:
    repo_id, folder, _ = uploaded_repo
    commits_before = hub.commit_ids(repo_id)

    commit = HfApi().upload_folder(repo_id=repo_id, folder_path=folder)

    assert commit.oid == commits_before[0]
    assert hub.commit_ids(repo_id) == commits_before
    assert _calls(hub.requests) == [
        f"POST /api/models/{repo_id}/preupload/main -> 200",
        f"POST /{repo_id}.git/info/lfs/objects/batch -> 200",  # both LFS objects known: no upload action
        f"GET /api/models/{repo_id}/revision/main -> 200",
    ]


def test_offline_download_makes_no_request(hub: LocalHub, uploaded_repo, tmp_path: Path) -> None:
    repo_id, _, contents = uploaded_repo
    cache_dir = tmp_path / "filled-cache"
    snapshot_download(repo_id, cache_dir=cache_dir)
    requests_before = hub.request_count
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download

        repo_id, cache_dir = sys.argv[1:3]
        print(Path(hf_hub_download(repo_id, "notes.txt", cache_dir=cache_dir)).read_text(), end="")
        print(sorted(path.name for path in Path(snapshot_download(repo_id, cache_dir=cache_dir)).iterdir()))
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", script, repo_id, str(cache_dir)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        contents["notes.txt"].decode().rstrip("\n"),
        "['.gitattributes', 'data', 'model.safetensors', 'notes.txt']",
    ]
    assert hub.request_count == requests_before


def test_file_system_reads_byte_range(hub: LocalHub, uploaded_repo) -> None:
    repo_id, _, contents = uploaded_repo

    with HfFileSystem().open(f"{repo_id}/data/blob.bin", "rb") as file:
        file.seek(300)
        chunk = file.read(8)

    assert chunk == contents["data/blob.bin"][300:308]
    assert [request.status for request in hub.requests if "/resolve/" in request.path] == [206]


def test_list_repo_files_follows_pagination(hub: LocalHub, uploaded_repo, monkeypatch) -> None:
    repo_id, _, contents = uploaded_repo
    monkeypatch.setattr(hub.api, "tree_page_size", 2)

    files = HfApi().list_repo_files(repo_id)

    assert sorted(files) == sorted([".gitattributes", *contents])
    tree_requests = [request for request in hub.requests if "/tree/" in request.path]
    assert len(tree_requests) == 3  # 5 entries (4 files and the "data" folder), 2 per page


# --- errors --------------------------------------------------------------------------------------


def test_missing_repo_raises_repository_not_found(hub: LocalHub) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{hub.user}/no-such-repo", "config.json")


def test_missing_revision_raises_revision_not_found(hub: LocalHub, uploaded_repo) -> None:
    repo_id, _, _ = uploaded_repo

    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "notes.txt", revision="no-such-branch")


def test_missing_file_raises_entry_not_found(hub: LocalHub, uploaded_repo) -> None:
    repo_id, _, _ = uploaded_repo

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "no-such-file.txt")


def test_unknown_route_logged_as_warning(hub: LocalHub, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hub_server"):
        response = get_session().get(f"{hub.url}/api/no-such-endpoint")

    assert response.status_code == 404
    assert hub.unknown_requests == ["GET /api/no-such-endpoint"]
    assert "LocalHub has no route for GET /api/no-such-endpoint" in caplog.text


# --- transformers and datasets -------------------------------------------------------------------


def test_transformers_model_round_trip(hub: LocalHub, hub_token: str) -> None:
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    repo_id = hub.new_repo_id("tiny-bert")
    config = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    model = BertModel(config)

    model.push_to_hub(repo_id)
    loaded = AutoModel.from_pretrained(repo_id)

    assert type(loaded) is BertModel
    assert loaded.config.hidden_size == 8
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert hub.is_lfs(repo_id, "model.safetensors") is True
    assert hub.unknown_requests == []


def test_datasets_push_and_load_round_trip(hub: LocalHub, hub_token: str, tmp_path: Path) -> None:
    from datasets import Dataset, load_dataset

    repo_id = hub.new_repo_id("tiny-digits")
    rows = {"image_id": [0, 1, 2], "label": [7, 2, 1]}

    Dataset.from_dict(rows).push_to_hub(repo_id)
    loaded = load_dataset(repo_id, split="train", cache_dir=str(tmp_path / "fresh-datasets-cache"))

    assert loaded.to_dict() == rows
    assert hub.is_lfs(repo_id, "data/train-00000-of-00001.parquet", repo_type="dataset") is True
    assert hub.unknown_requests == []


# --- model card validation -----------------------------------------------------------------------


def test_model_card_validate_accepts_good_metadata(hub: LocalHub) -> None:
    ModelCard(GOOD_CARD).validate()

    assert _calls(hub.requests) == ["POST /api/validate-yaml -> 200"]


@pytest.mark.parametrize(
    ("bad_metadata", "message"),
    [
        ("license: not-a-licence", '"license" must be a known licence id or "other", got \'not-a-licence\''),
        ("pipeline_tag: digit-guessing", "\"pipeline_tag\" must be a known task id, got 'digit-guessing'"),
        ("datasets: mnist", "\"datasets\" must be a list of strings, got 'mnist'"),
        ("library_name: [transformers]", "\"library_name\" must be a string, got ['transformers']"),
    ],
)
def test_model_card_validate_rejects_bad_field(hub: LocalHub, bad_metadata: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelCard(f"---\n{bad_metadata}\n---\n# Card\n").validate()


# `ModelCard` parses the metadata itself and raises before `validate()` on broken YAML or a broken
# model-index, so these cases go through an upload, which sends the README text as it is.
@pytest.mark.parametrize(
    ("readme", "message"),
    [
        ("---\nlicense: [mit\n---\n", "metadata is not valid YAML"),
        (GOOD_CARD.replace("      value: 0.98\n", ""), "model-index[0].results[0].metrics[0].value is required"),
        (GOOD_CARD.replace("      type: mnist\n", ""), "model-index[0].results[0].dataset.type is required"),
    ],
)
def test_readme_upload_rejects_bad_metadata(hub: LocalHub, hub_token: str, readme: str, message: str) -> None:
    repo_id = hub.new_repo_id("bad-card")
    HfApi().create_repo(repo_id)

    with pytest.raises(ValueError, match=re.escape(message)):
        HfApi().upload_file(path_or_fileobj=readme.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert len(hub.commit_ids(repo_id)) == 1


# --- failure injection ---------------------------------------------------------------------------


def test_injected_500_raises_http_error(hub: LocalHub) -> None:
    hub.fail_next(1, status=500)

    with pytest.raises(HfHubHTTPError) as error:
        HfApi().whoami(token=hub.token)

    assert error.value.response.status_code == 500
    assert HfApi().whoami(token=hub.token)["name"] == hub.user
    assert [request.injected for request in hub.requests] == [True, False]


def test_dropped_connection_raises_protocol_error(hub: LocalHub) -> None:
    hub.drop_next(1, path_contains="/whoami")

    with pytest.raises(httpx2.RemoteProtocolError):
        HfApi().whoami(token=hub.token)

    assert [request.status for request in hub.requests] == [None]


def test_backoff_retries_after_injected_503(hub: LocalHub, uploaded_repo) -> None:
    repo_id, _, contents = uploaded_repo
    hub.fail_next(1, status=503, method="GET", path_contains="/tree/")

    files = HfApi().list_repo_files(repo_id)  # `http_backoff` waits 1 s, then retries

    assert sorted(files) == sorted([".gitattributes", *contents])
    assert [request.status for request in hub.requests if "/tree/" in request.path] == [503, 200]


# --- network guard -------------------------------------------------------------------------------


def test_network_guard_blocks_private_address(network_guard) -> None:
    with network_guard.expect_blocked() as attempts:
        with pytest.raises(RuntimeError, match=r"Blocked connection to 10\.255\.255\.1:9"):
            socket.create_connection(("10.255.255.1", 9), timeout=1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(RuntimeError, match=r"Blocked connection to 10\.255\.255\.1:9"):
                sock.connect(("10.255.255.1", 9))
            with pytest.raises(OSError):
                sock.getpeername()  # the socket never connected

    assert attempts == ["connection to 10.255.255.1:9", "connection to 10.255.255.1:9"]


def test_network_guard_blocks_name_lookup(network_guard) -> None:
    with network_guard.expect_blocked() as attempts:
        with pytest.raises(RuntimeError, match="Blocked name lookup of 'example.invalid'"):
            socket.getaddrinfo("example.invalid", 443)

    assert attempts == ["name lookup of 'example.invalid'"]


def test_network_guard_allows_loopback(hub: LocalHub) -> None:
    port = int(hub.url.rsplit(":", 1)[1])

    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, port), timeout=5) as connection:
            assert connection.getpeername()[1] == port


def test_commit_endpoint_rejects_bad_readme(hub: LocalHub) -> None:
    # Clients validate README.md before committing, so this sends the commit body by hand.
    repo_id = hub.new_repo_id("raw-commit")
    HfApi().create_repo(repo_id, token=hub.token)
    lines = [
        {"key": "header", "value": {"summary": "Add card", "description": ""}},
        {
            "key": "file",
            "value": {"path": "README.md", "encoding": "base64", "content": "LS0tCmxpY2Vuc2U6IG5vcGUKLS0tCg=="},
        },
    ]

    response = get_session().post(
        f"{hub.url}/api/models/{repo_id}/commit/main",
        content="".join(json.dumps(line) + "\n" for line in lines).encode(),
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
    )

    assert response.status_code == 400
    assert "Invalid metadata in README.md" in response.json()["error"]
    assert len(hub.commit_ids(repo_id)) == 1


def test_network_guard_fails_test_that_swallows_error(tmp_path: Path) -> None:
    # A fresh pytest process, because the conftest must load before huggingface_hub is imported.
    tests_dir = Path(__file__).parent
    for name in ("conftest.py", "hub_server.py"):
        (tmp_path / name).write_text((tests_dir / name).read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_swallow.py").write_text(
        textwrap.dedent(
            """
            import socket

            def test_swallows_blocked_connection():
                try:
                    socket.create_connection(("10.255.255.1", 9), timeout=1)
                except Exception:
                    pass
            """
        )
    )

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_swallow.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "swallowed the error: connection to 10.255.255.1:9" in result.stdout
