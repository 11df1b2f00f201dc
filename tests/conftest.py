"""Fixtures on the real test services of `scripts/testenv`, and markers by folder.

Services are brought up once per session with `scripts/testenv up SERVICE...` (which
is idempotent: seconds when they already run) and left running; `scripts/test` stops
them at the end. A service that cannot start skips its tests with the reason, or
fails them with the service's log tail when CI=true: nothing skips silently in CI.

Other conftest files ask for services through the `testenv` fixture:
`testenv.require("cluster")` returns the variables `scripts/testenv env` prints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTENV = REPO / "scripts" / "testenv"
# tests/<folder>/... gets the marker of its folder.
FOLDER_MARKERS = {
    "unit": "unit",
    "engine": "engine",
    "integration": "integration",
    "cluster": "cluster",
    "operator": "cluster",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = item.path.resolve().relative_to(tests_dir).parts[0]
        except (ValueError, IndexError):
            continue
        marker = FOLDER_MARKERS.get(folder)
        # A test that runs on the real services (e.g. an engine scenario over Kafka and
        # MongoDB) is an integration test wherever it lives.
        if marker is not None and item.get_closest_marker("integration") is None:
            item.add_marker(marker)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


class TestEnv:
    """Starts services on demand, once per session, and remembers what failed."""

    def __init__(self) -> None:
        self._env: dict[str, str] = {}
        self._ready: set[str] = set()
        self._failed: dict[str, str] = {}

    def require(self, *services: str) -> dict[str, str]:
        """Bring `services` up (and the network) and return their environment variables."""
        wanted = ["network", *(s for s in services if s != "network")]
        for name in wanted:
            if name in self._failed:
                self._unavailable(self._failed[name])
        missing = [name for name in wanted if name not in self._ready]
        if missing:
            error = self._up(missing)
            if error is not None:
                for name in missing:
                    self._failed[name] = error
                self._unavailable(error)
            self._ready.update(missing)
            self._env.update(self._read_env())
            os.environ.update({k: v for k, v in self._env.items() if k.startswith("FLOWKIT_")})
        return dict(self._env)

    def _up(self, services: list[str]) -> str | None:
        proc = subprocess.run(
            [sys.executable, str(TESTENV), "up", *services],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode == 0:
            return None
        return f"`scripts/testenv up {' '.join(services)}` failed:\n{proc.stderr.strip()}"

    def _read_env(self) -> dict[str, str]:
        out = subprocess.run(
            [sys.executable, str(TESTENV), "env", *sorted(self._ready)],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        ).stdout
        env: dict[str, str] = {}
        for line in out.splitlines():
            if not line.startswith("export "):
                continue
            key, _, value = shlex.split(line[len("export ") :])[0].partition("=")
            if key != "PATH":  # PATH refers to the caller's "$PATH"; tools have their own variables
                env[key] = value
        return env

    @staticmethod
    def _unavailable(reason: str) -> None:
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def testenv() -> TestEnv:
    return TestEnv()


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:24]
    return f"{prefix}_{name}_{uuid.uuid4().hex[:8]}"


# -- Kafka --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_env(testenv: TestEnv) -> dict[str, str]:
    return testenv.require("kafka")


@pytest.fixture
def kafka_bootstrap(kafka_env: dict[str, str]) -> str:
    """Bootstrap servers of the test broker, for clients on this host."""
    return kafka_env["FLOWKIT_TEST_KAFKA_BOOTSTRAP"]


@pytest.fixture
def kafka_topic_prefix(kafka_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    """A prefix no other test uses: name every topic and group of the test with it. Its
    topics are deleted afterwards (thousands of partitions wear the test broker out)."""
    from flowkit.testing.distributed import drop_topics

    prefix = _unique(request, "t").replace("_", "-") + "."
    yield prefix
    # In a thread of its own: this teardown may run while the test's event loop runs.
    bootstrap = kafka_env["FLOWKIT_TEST_KAFKA_BOOTSTRAP"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, drop_topics(bootstrap, prefix)).result(timeout=30)
        except Exception as exc:  # the broker may be what the test broke
            print(f"could not delete the topics of {prefix}: {exc}")


# -- MongoDB protocol -------------------------------------------------------------------
@pytest.fixture(scope="session")
def mongo_url(testenv: TestEnv) -> str:
    return testenv.require("ferretdb")["FLOWKIT_TEST_MONGO_URL"]


@pytest.fixture
async def mongo_db(mongo_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh database on pymongo's AsyncMongoClient, dropped afterwards."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    name = _unique(request, "flowkit")
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
async def motor_db(mongo_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh motor AsyncIOMotorDatabase (as users pass with `db=`), dropped afterwards."""
    from motor.motor_asyncio import AsyncIOMotorClient

    client: Any = AsyncIOMotorClient(mongo_url, serverSelectionTimeoutMS=10_000)
    name = _unique(request, "flowkit")
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        client.close()


# -- tools ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def helm(testenv: TestEnv) -> str:
    """Path of the helm binary (Helm 4)."""
    return testenv.require("tools")["FLOWKIT_HELM"]


@pytest.fixture(scope="session", params=["FLOWKIT_HELM", "FLOWKIT_HELM3"], ids=["helm4", "helm3"])
def any_helm(request: pytest.FixtureRequest, testenv: TestEnv) -> str:
    """Helm 4, then Helm 3: for what must work with both (the chart)."""
    return testenv.require("tools")[request.param]


@pytest.fixture(scope="session")
def host_ip(testenv: TestEnv) -> str:
    """The pod bridge's gateway address, where host services listen for pods."""
    return testenv.require()["FLOWKIT_TEST_HOST_IP"]
