"""What a store write may set: the checks both stores make before writing anything.

Kept in one place so that MemoryStore and MongoStore refuse the same writes with the
same errors (the contract suite pins them).
"""

from __future__ import annotations

from typing import Any

from ..states import NodeStatus, TaskStatus
from .base import Fence

TASK_FIELDS_NOT_SETTABLE = frozenset(
    {"nodes", "owner", "fence", "cancel_requested", "suspend_requested", "labels"}
)
"""Task fields ``update_task`` / ``write_task`` refuse: nodes are written per node
(``update_node``, the node part of ``write_task``), ownership by claim and release
(see :func:`task_fields_to_write` for the one exception), requests by
``request_cancel`` / ``request_suspend`` (they are not stored in the task), labels
never (they are given at creation)."""

_IDENTITY = frozenset({"task_id", "node_id"})

WORKER_STATE_RESERVED = frozenset({"_id", "worker_id", "updated_at"})
"""Top-level names of a worker state document the store itself sets."""


def task_fields_to_write(fields: dict[str, Any], fence: Fence | None) -> dict[str, Any]:
    """The task fields a task update writes; ValueError for the ones it may not set.

    ``owner`` passes only as what it already is, the fence's owner in a fenced write
    (a coordinator keeping its own copy of the status in step): it is then dropped,
    since the fence already requires it.
    """
    refused = sorted(fields.keys() & TASK_FIELDS_NOT_SETTABLE)
    if refused == ["owner"] and fence is not None and fields["owner"] == fence.owner:
        return {name: value for name, value in fields.items() if name != "owner"}
    if refused:
        raise ValueError(
            f"a task update cannot set {refused}: set nodes with update_node or write_task's "
            "node_fields, ownership with claim_task / release_task, requests with request_cancel / "
            "request_suspend; labels are set at creation only"
        )
    return fields


def check_names(model: type[TaskStatus] | type[NodeStatus], fields: dict[str, Any]) -> None:
    """Raise AttributeError unless every name is a field of ``model`` other than its id."""
    unknown = sorted(name for name in fields if name not in model.model_fields or name in _IDENTITY)
    if unknown:
        raise AttributeError(f"{model.__name__} has no updatable field(s) {unknown}")


def worker_state_paths(fields: dict[str, Any]) -> list[tuple[str, ...]]:
    """The dotted keys of a worker state update split into paths, in order.

    ValueError for an empty segment (``"a..b"``), a name the store sets itself
    (``worker_id``, ``updated_at``) or two paths where one contains the other
    (``"run"`` and ``"run.checkpoint"``): MongoDB refuses those updates too.
    """
    paths = [tuple(key.split(".")) for key in fields]
    for key, path in zip(fields, paths, strict=True):
        if "" in path:
            raise ValueError(f"worker state key {key!r} has an empty segment")
        if path[0] in WORKER_STATE_RESERVED:
            raise ValueError(f"worker state key {key!r}: {path[0]!r} is set by the store")
    for a in paths:
        for b in paths:
            if a != b and b[: len(a)] == a:
                raise ValueError(f"worker state keys {'.'.join(a)!r} and {'.'.join(b)!r} overlap")
    return paths
