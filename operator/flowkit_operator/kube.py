"""A kubernetes-asyncio client for the calls kopf does not make (status, Deployments, pods, Events)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

GROUP, VERSION = "flowkit.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FLOWTASKS, POOLS = "flowtasks", "flowworkerpools"
MERGE_PATCH = "application/merge-patch+json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "flowkit-operator"}


async def api_client() -> Any:
    """In the cluster: the pod's ServiceAccount; elsewhere: $KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    loader: Any = config.load_incluster_config
    try:
        loader(client_configuration=configuration)
    except ConfigException:
        # $KUBECONFIG read now: kubernetes-asyncio reads its default once, at import.
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return client.ApiClient(configuration=configuration)


# The generated clients, used untyped: their stubs know models, we send plain dicts.
def custom_api(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def core_api(api: Any) -> Any:
    return client.CoreV1Api(api)


def apps_api(api: Any) -> Any:
    return client.AppsV1Api(api)


@dataclass(frozen=True)
class ObjectRef:
    """Which object an Event or a patch is about."""

    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = API_VERSION

    @classmethod
    def of(cls, body: Any) -> ObjectRef:
        meta = body["metadata"]
        return cls(
            kind=str(body.get("kind", "FlowTask")),
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta["uid"]),
            api_version=str(body.get("apiVersion", API_VERSION)),
        )

    def as_involved_object(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 404


async def patch_flowtask_status(custom: Any, ref: ObjectRef, status: dict[str, Any]) -> bool:
    """Merge ``status`` into the FlowTask's status subresource; False if it is gone."""
    try:
        await custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ref.namespace, FLOWTASKS, ref.name, {"status": status}, _content_type=MERGE_PATCH
        )
    except client.ApiException as exc:
        if is_not_found(exc):
            return False
        raise
    return True
