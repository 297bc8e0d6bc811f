"""Test environment: a local Hub for the session, per-test HF folders and a loopback-only network guard.

The module body runs when pytest loads this conftest, before any test module imports
`huggingface_hub`, `transformers` or `datasets`. It must, because those packages read `HF_ENDPOINT`
and the cache and token paths into module constants at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import LocalHub

_CLIENT_PACKAGES = ("huggingface_hub", "transformers", "datasets", "evaluate")
_already_imported = [name for name in _CLIENT_PACKAGES if name in sys.modules]
if _already_imported:
    raise RuntimeError(
        f"{', '.join(_already_imported)} was imported before tests/conftest.py, so it read the real Hub endpoint "
        "and the user's cache paths. Remove the plugin or import that loads it before the conftest."
    )

# Variables that would point the clients at a user's real token, cache or offline setting.
_INHERITED_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_OIDC_RESOURCE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_DATASETS_CACHE",
    "HF_XET_CACHE",
    "HF_MODULES_CACHE",
    "HUGGINGFACE_CO_STAGING",
)

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hf-mnist-tests-"))
_HUB = LocalHub(_SESSION_DIR / "hub-storage").start()

for _name in _INHERITED_VARIABLES:
    os.environ.pop(_name, None)
os.environ.update(
    {
        "HF_ENDPOINT": _HUB.url,
        "HF_HOME": str(_SESSION_DIR / "hf-home"),
        # No telemetry HEAD requests, and no agent-registry lookup while building the user agent.
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        # `datasets` would otherwise send a HEAD request to an S3 bucket on every `load_dataset`.
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        # LocalHub has no Xet storage: uploads go through the LFS basic transfer, downloads through /resolve.
        "HF_HUB_DISABLE_XET": "1",
        # The `hf` CLI would otherwise check PyPI for updates.
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
)


def _stop_session_hub() -> None:
    _HUB.stop()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


atexit.register(_stop_session_hub)

# `datasets.load_dataset` queries the parquet-export service at `datasets-server.<HF_ENDPOINT host>`, a
# host that does not exist for a local endpoint, and this flag is the only way to turn that off.
# Importing `datasets` here, after the variables above, makes the flag hold for every test.
# NOTE: a subprocess that calls `load_dataset(repo_id)` still makes that DNS lookup: it has neither this
# flag nor the network guard.
import datasets.config  # noqa: E402

datasets.config.USE_PARQUET_EXPORT = False


# ----------------------------------------------------------------------------------------------
# Network guard
# ----------------------------------------------------------------------------------------------


class NetworkAccessBlockedError(RuntimeError):
    """Raised when code under test resolves a host name or connects to an address outside loopback.

    It is not an `OSError`, so HTTP clients do not treat it as a transient network error to retry
    or to fall back from silently.
    """


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _is_loopback_host(host: object) -> bool:
    """Tell whether `host` is `localhost` or an IP literal in 127.0.0.0/8 or ::1 (IPv4-mapped included)."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _is_ip_literal(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


class NetworkGuard:
    """Blocks, before any packet leaves, connections and name lookups that go beyond loopback.

    It wraps `socket.getaddrinfo`, `gethostbyname(_ex)`, `create_connection` and the `connect`,
    `connect_ex` and `sendto` methods of `socket.socket`. Unix sockets and loopback addresses pass.
    Blocked attempts are recorded, so a test fails even when the code under test swallows the error.
    NOTE: native code that opens sockets itself (Rust or C++ extensions) bypasses these wrappers.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        guard = self
        original_getaddrinfo = socket.getaddrinfo
        original_gethostbyname = socket.gethostbyname
        original_gethostbyname_ex = socket.gethostbyname_ex
        original_create_connection = socket.create_connection
        original_connect = socket.socket.connect
        original_connect_ex = socket.socket.connect_ex
        original_sendto = socket.socket.sendto

        def getaddrinfo(host, *args, **kwargs):
            # Literal addresses need no lookup; the connect wrapper checks them.
            if host not in (None, "", b"") and not _is_loopback_host(host) and not _is_ip_literal(host):
                guard.block(f"name lookup of {host!r}")
            return original_getaddrinfo(host, *args, **kwargs)

        def gethostbyname(host):
            if not _is_loopback_host(host) and not _is_ip_literal(host):
                guard.block(f"name lookup of {host!r}")
            return original_gethostbyname(host)

        def gethostbyname_ex(host):
            if not _is_loopback_host(host) and not _is_ip_literal(host):
                guard.block(f"name lookup of {host!r}")
            return original_gethostbyname_ex(host)

        def create_connection(address, *args, **kwargs):
            if not _is_loopback_host(address[0]):
                guard.block(f"connection to {address[0]}:{address[1]}")
            return original_create_connection(address, *args, **kwargs)

        def connect(sock, address):
            guard.check_socket_address(sock, address, "connection")
            return original_connect(sock, address)

        def connect_ex(sock, address):
            guard.check_socket_address(sock, address, "connection")
            return original_connect_ex(sock, address)

        def sendto(sock, data, *args):
            guard.check_socket_address(sock, args[-1], "datagram")
            return original_sendto(sock, data, *args)

        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.gethostbyname_ex = gethostbyname_ex
        socket.create_connection = create_connection
        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        socket.socket.sendto = sendto

    def check_socket_address(self, sock: socket.socket, address: object, attempt_kind: str) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # Unix, netlink and other local sockets
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_loopback_host(host):
            port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
            self.block(f"{attempt_kind} to {host}:{port}")

    def block(self, attempt: str) -> None:
        with self._lock:
            self.blocked.append(attempt)
        raise NetworkAccessBlockedError(
            f"Blocked {attempt}: tests may only reach loopback addresses (127.0.0.0/8, ::1, localhost). "
            "Point the code at the `hub` fixture's URL or another server on 127.0.0.1."
        )

    @contextlib.contextmanager
    def expect_blocked(self) -> Iterator[list[str]]:
        """Let a test trigger blocked attempts on purpose: yields a list of the attempts made inside the block.

        The attempts are removed from the record, so they do not fail the test.
        """
        with self._lock:
            start = len(self.blocked)
        attempts: list[str] = []
        try:
            yield attempts
        finally:
            with self._lock:
                attempts.extend(self.blocked[start:])
                del self.blocked[start:]

    def take_blocked(self) -> list[str]:
        with self._lock:
            attempts, self.blocked = self.blocked, []
        return attempts


_NETWORK_GUARD = NetworkGuard()
_NETWORK_GUARD.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _NETWORK_GUARD.take_blocked()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    attempts = _NETWORK_GUARD.take_blocked()
    if attempts:
        pytest.fail(
            "The test tried to reach the network beyond loopback, and the code under test swallowed the error: "
            + "; ".join(attempts),
            pytrace=False,
        )
    return result


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a long test (a real training run, a large download); deselect with -m 'not slow'"
    )


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------

# `huggingface_hub.constants` attributes derived from HF_HOME at import time, and the folder under the
# per-test HF home that each one points to.
_HUB_CONSTANT_PATHS = {
    "HF_HOME": "",
    "HF_HUB_CACHE": "hub",
    "HUGGINGFACE_HUB_CACHE": "hub",
    "default_cache_path": "hub",
    "HF_ASSETS_CACHE": "assets",
    "HUGGINGFACE_ASSETS_CACHE": "assets",
    "default_assets_cache_path": "assets",
    "HF_XET_CACHE": "xet",
    "default_xet_cache_path": "xet",
    "HF_TOKEN_PATH": "token",
    "HF_STORED_TOKENS_PATH": "stored_tokens",
    "CHECK_FOR_UPDATE_DONE_PATH": ".check_for_update_done",
    "CHECK_FOR_SKILL_UPDATE_DONE_PATH": ".check_for_skill_update_done",
    "AGENT_HARNESSES_PATH": ".agent_harnesses.json",
}


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test its own HF home (hub cache, datasets cache, token) and no token unless it sets one.

    The environment variables reach subprocesses, and the module constants that the clients read at
    import time are patched for this process.
    """
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setenv("HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

    import huggingface_hub.constants as hub_constants

    for attribute, relative_path in _HUB_CONSTANT_PATHS.items():
        monkeypatch.setattr(hub_constants, attribute, str(home / relative_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    # Modules that copied a constant with `from ..constants import NAME` when they were imported.
    for module_name, attribute, relative_path in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", "hub"),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", "assets"),
    ):
        if module_name in sys.modules:
            monkeypatch.setattr(sys.modules[module_name], attribute, str(home / relative_path))

    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture(autouse=True)
def _reset_hub_state() -> Iterator[None]:
    """Start each test with an empty request log, and drop the failure injections it leaves unused."""
    _HUB.reset_requests()
    yield
    _HUB.clear_failures()


@pytest.fixture(scope="session")
def hub() -> LocalHub:
    """The session's local Hub, which `HF_ENDPOINT` points to. Repos persist for the whole session."""
    return _HUB


@pytest.fixture
def hub_token(hf_home: Path, hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set `HF_TOKEN` to the local Hub's write token for this test and return it."""
    monkeypatch.setenv("HF_TOKEN", hub.token)
    return hub.token


@pytest.fixture
def network_guard() -> NetworkGuard:
    """The network guard, for tests that check it (see `NetworkGuard.expect_blocked`)."""
    return _NETWORK_GUARD
