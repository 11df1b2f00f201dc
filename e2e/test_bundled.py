"""The chart's bundled Kafka and MongoDB (kafka.bundled.enabled, mongodb.bundled.enabled)
run a FlowTask too: a second installation, nothing outside the cluster. On the test node
the images are local builds of the same software, set through the chart's image values
(scripts/testenv image bundled: Kafka from its jars, FerretDB standing in for mongod);
on kind, the chart's default official images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import targets
from .release import EXAMPLES, Release, new_release, run_name


@pytest.fixture(scope="module")
def bundled_release(
    target: targets.Target,
    flowkit_image: tuple[str, str],
    chart_crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    values = target.bundled_values()
    values["image"] = {"repository": flowkit_image[0], "tag": flowkit_image[1]}
    name = run_name()
    values["watchNamespaces"] = [name]
    values["pools"] = [
        {
            "name": "etl",
            "roles": ["extractor", "transformer", "loader", "rates"],
            "handlers": "examples.etl.handlers:HANDLERS",
            "capacity": 4,
            "minReplicas": 1,
            "maxReplicas": 2,
        }
    ]
    path: Path = tmp_path_factory.mktemp("bundled") / "values.json"
    path.write_text(json.dumps(values))
    release = new_release(target, name)
    try:
        release.install("-f", str(path), timeout=420)
        yield release
    finally:
        release.uninstall()


def test_the_bundled_kafka_and_mongodb_run_the_etl_example(bundled_release: Release) -> None:
    kubectl = bundled_release.kubectl
    statefulsets = {s["metadata"]["name"]: s for s in kubectl.json("statefulsets")["items"]}
    assert {f"{bundled_release.name}-flowkit-kafka", f"{bundled_release.name}-flowkit-mongodb"} <= set(
        statefulsets
    ), sorted(statefulsets)
    bundled_release.apply_file(EXAMPLES / "etl-task.yaml")  # the pool came with the chart's values
    kubectl.wait("ft/etl", "condition=Succeeded", timeout=240)
    status = bundled_release.status("etl")
    assert status["progress"] == "6/6"
    assert status["nodes"]["fetch_rates"]["attempts"] == 2
    # The operator and the workers talk to the release's own services.
    operator = kubectl.json("deploy", f"{bundled_release.name}-flowkit-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLOWKIT_KAFKA_BOOTSTRAP"].startswith(f"{bundled_release.name}-flowkit-kafka.")
    logs = bundled_release.worker_logs()
    assert f"task {status['taskId']} node fetch_rates attempt 1 failed" in logs, logs[-3000:]
