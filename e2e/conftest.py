"""Fixtures of the e2e suite: the target cluster, the image built once, the chart
installed once with the README's own commands (shared by every test that uses the
chart by address), and the helpers to run FlowTasks on it.

Every test here gets the `e2e` marker. Services come from the same `TestEnv` as the
rest of the suite (tests/conftest.py): a missing one skips, or FAILS with CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parent
REPO = E2E.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cluster.conftest import build_image  # noqa: E402
from cluster.kube import Kubectl  # noqa: E402

from . import readme, targets  # noqa: E402
from .release import Release, new_release, run_name  # noqa: E402


def _tests_conftest() -> Any:
    """tests/conftest.py under a name of its own (its module name `conftest` is ambiguous)."""
    spec = importlib.util.spec_from_file_location("flowkit_tests_conftest", TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TESTS_CONFTEST = _tests_conftest()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in item.path.resolve().parents:
            item.add_marker("e2e")
            # The first test of a target also pays for the image build and `helm install`.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def testenv() -> Any:
    return _TESTS_CONFTEST.TestEnv()


def _unavailable(reason: str, explicit: bool) -> None:
    # Kind is optional unless asked for; the test node is a service like the others.
    if explicit and _TESTS_CONFTEST.in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", params=targets.selected())
def target(request: pytest.FixtureRequest, testenv: Any) -> targets.Target:
    """The cluster the suite runs on (see e2e/targets.py)."""
    if request.param == targets.KIND:
        try:
            return targets.kind()
        except targets.Unavailable as exc:
            _unavailable(str(exc), explicit=os.environ.get(targets.SELECT) == targets.KIND)
    return targets.test_node(testenv, build_image)


@pytest.fixture(scope="session")
def flowkit_image(target: targets.Target) -> tuple[str, str]:
    """(repository, tag) of the image built from the Dockerfile, once per session and target."""
    return target.flowkit_image()


def _run_readme_command(command: str, setup: list[str], env: dict[str, str], release: Release) -> None:
    script = "\n".join(["set -euo pipefail", *setup, command])
    if re.search(r"\bget ft -w\b", command):
        _watch_until_succeeded(script, env, release)
        return
    proc = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=420
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"README command failed ({proc.returncode}): {command}\n{proc.stdout}{proc.stderr}\n"
            f"{release.diagnostics()}"
        )


def _watch_until_succeeded(script: str, env: dict[str, str], release: Release, timeout: float = 300) -> None:
    """`kubectl get ft -w` runs until its output shows the task Succeeded with 6/6 (then Ctrl-C)."""
    proc = subprocess.Popen(
        ["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if re.search(r"\bSucceeded\s+6/6\b", line):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"`kubectl get ft -w` showed no Succeeded 6/6 in {timeout:.0f}s")
        else:
            raise AssertionError(f"`kubectl get ft -w` ended ({proc.wait()}) without Succeeded 6/6")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{''.join(seen)}\n{release.diagnostics()}") from None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    release.watch_output = "".join(seen)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def chart_crds(target: targets.Target) -> None:
    """The cluster's CRDs made the chart's before `helm install`, when they already exist.

    The test cluster is shared: other suites apply crds/ themselves (field manager
    `kubectl`), and a CRD they applied from an older checkout differs from the chart's,
    which helm's server-side apply refuses as a conflict. On a fresh cluster (a user's,
    or CI's) the CRDs are absent and `helm install` creates them: nothing happens here."""
    kubectl = Kubectl(target.kubectl, target.kubeconfig)
    present = kubectl.run("get", "crd", "flowtasks.flowkit.io", "flowworkerpools.flowkit.io", check=False)
    if present.returncode == 0:
        crds = REPO / "helm" / "flowkit" / "crds"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))


@pytest.fixture(scope="session")
def readme_release(
    target: targets.Target, flowkit_image: tuple[str, str], chart_crds: None
) -> Iterator[Release]:
    """The README's "On Kubernetes" commands, run as written (names of this run's own, see
    e2e/readme.py): the chart by address, the example pool, the example ETL task watched
    until Succeeded. Every test of the chart by address shares this installation."""
    services = target.services() if target.name == targets.TEST_NODE else None
    if target.name == targets.KIND:
        try:
            services = target.services()
        except targets.Unavailable as exc:
            pytest.skip(str(exc))
    assert services is not None
    name = run_name()
    database = name.replace("-", "_")
    settings = readme.RunSettings(
        namespace=name,
        release=name,
        image_repository=flowkit_image[0],
        image_tag=flowkit_image[1],
        database=database,
        topic_prefix=f"{name}.",
    )
    release = new_release(
        target,
        name,
        mongo_url=services.mongo_for_host + database,
        kafka_for_host=services.kafka_for_host,
        topic_prefix=settings.topic_prefix,
    )
    env = {**target.tool_env(), **target.readme_env}
    setup: list[str] = []
    try:
        for command in readme.install_commands():
            adapted = readme.adapt(command, settings)
            if adapted.startswith("eval "):
                if not target.readme_skips_eval:
                    setup.append(adapted)
                continue
            if re.match(r"^[A-Z_]+=", adapted):
                setup.append(adapted)
                continue
            _run_readme_command(adapted, setup, env, release)
        yield release
    finally:
        release.uninstall()
