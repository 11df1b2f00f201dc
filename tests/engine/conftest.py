"""Every scenario of a module that uses ``LocalRuntime`` runs on both backends.

``embedded`` is the in-process runtime (marker ``engine``: no services, seconds);
``distributed`` puts :class:`DistributedRuntime` in the module's ``LocalRuntime`` place
(marker ``integration``: real Kafka and the MongoDB-protocol server).
"""

from __future__ import annotations

from typing import Any

import pytest

BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("distributed", id="distributed", marks=pytest.mark.integration),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if hasattr(metafunc.module, "LocalRuntime"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Autouse, so that the parametrization above reaches it; other modules run embedded."""
    param = getattr(request, "param", "embedded")
    if param == "distributed":
        request.getfixturevalue("kafka_bootstrap")
        request.getfixturevalue("mongo_url")
        from distributed_runtime import DistributedRuntime

        monkeypatch.setattr(request.module, "LocalRuntime", DistributedRuntime)
    return param
