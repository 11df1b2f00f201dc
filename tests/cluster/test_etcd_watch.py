"""The cluster's etcd is one Kubernetes 1.37 supports (3.6): a watch-list style watch
(`sendInitialEvents=true`) works, and no component says progress notifications are missing.

Against Debian's etcd 3.4 the same watch is answered with one ERROR event ("the required
storage feature RequestWatchProgress is disabled"), which is what a client-go informer
with the WatchListClient feature meets on a cluster with an old etcd.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from .kube import CLUSTER_COMPONENTS, Kubectl

SUPPORTED_ETCD_MINOR = "3.6."
# kube-apiserver's feature check at start, and its answer to a watch that needs it.
WATCH_PROGRESS_MISSING = (
    "RequestWatchProgress is disabled",
    "RequestWatchProgress feature is not supported",
)
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
WATCH_SECONDS = 30  # the API server ends the watch by then whatever happens


def _etcd(cluster_env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(cluster_env["FLOWKIT_TEST_ETCD_URL"] + path, data=data, timeout=5) as reply:
        return json.load(reply)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_api_server_stores_into_etcd_3_6(cluster_env: dict[str, str], namespace: str) -> None:
    version = _etcd(cluster_env, "/version")
    assert version["etcdserver"].startswith(SUPPORTED_ETCD_MINOR), version
    assert version["etcdcluster"].startswith(SUPPORTED_ETCD_MINOR), version
    # The same etcd holds the API server's objects: the test's namespace is in it.
    found = _etcd(cluster_env, "/v3/kv/range", {"key": _b64(f"/registry/namespaces/{namespace}")})
    assert found.get("count") == "1", found


def _watch_list_events(kubectl: Kubectl, resource: str) -> list[dict[str, Any]]:
    """A watch-list request's events up to its end-of-initial-events bookmark (or an error)."""
    query = (
        f"/api/v1/namespaces/{kubectl.namespace}/{resource}?watch=1&sendInitialEvents=true"
        f"&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}"
    )
    argv = [kubectl.binary, f"--kubeconfig={kubectl.kubeconfig}", "get", "--raw", query]
    events: list[dict[str, Any]] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # ends at the latest when the server closes the watch
                event = json.loads(line)
                events.append(event)
                metadata = event["object"].get("metadata", {})
                if event["type"] == "ERROR" or (
                    event["type"] == "BOOKMARK" and metadata.get("annotations", {}).get(INITIAL_EVENTS_END)
                ):
                    break
        finally:
            proc.kill()
            stderr = proc.stderr.read() if proc.stderr else ""
    assert events, f"the watch ended with no event: {stderr}"
    return events


def test_a_watch_list_gets_the_initial_objects_then_its_bookmark(kubectl: Kubectl) -> None:
    names = ["alpha", "beta", "gamma"]
    kubectl.apply(
        *({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {"n": n}} for n in names)
    )
    kubectl.wait("configmap/kube-root-ca.crt", "create")  # the controller-manager's, in every namespace
    events = _watch_list_events(kubectl, "configmaps")

    *initial, last = events
    assert last["type"] == "BOOKMARK", f"the watch-list was refused: {last}"
    assert last["object"]["metadata"]["annotations"][INITIAL_EVENTS_END] == "true"
    assert last["object"]["metadata"]["resourceVersion"], last
    assert {e["type"] for e in initial} == {"ADDED"}, initial
    # Every ConfigMap of the namespace, ours and kube-root-ca.crt.
    added = {e["object"]["metadata"]["name"] for e in initial}
    assert added == {*names, "kube-root-ca.crt"}


def _since_last_start(log: Path) -> str:
    """The part of a component's log written by its running process (start_daemon
    writes a `$ argv` line before each start; older runs stay in the same file)."""
    text = log.read_text(errors="replace")
    start = text.rfind("\n$ ")
    return text if start < 0 else text[start:]


def test_no_component_logs_missing_watch_progress(cluster_env: dict[str, str]) -> None:
    logs = Path(cluster_env["FLOWKIT_TEST_LOGS"])
    found = []
    for component in CLUSTER_COMPONENTS:
        for line in _since_last_start(logs / f"{component}.log").splitlines():
            if any(message in line for message in WATCH_PROGRESS_MISSING):
                found.append(f"{component}: {line.strip()[:300]}")
    assert not found, "\n".join(found)
