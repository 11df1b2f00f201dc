"""A FlowWorkerPool's ``status`` from its Deployment and pods. Pure: no I/O.

A worker that cannot start says why in its termination message (the pods use
``terminationMessagePolicy: FallbackToLogsOnError``, so `flowkit worker`'s one-line
error, e.g. "cannot import module 'x'", is there); that line becomes the pool's message.
"""

from __future__ import annotations

from typing import Any

READY, PROGRESSING, SCALED_TO_ZERO = "Ready", "Progressing", "ScaledToZero"
HANDLERS_NOT_IMPORTABLE, WORKER_FAILING = "HandlersNotImportable", "WorkerFailing"
PROBLEM_REASONS = frozenset({HANDLERS_NOT_IMPORTABLE, WORKER_FAILING, "ImageNotAvailable", "ConfigError"})
_IMAGE_WAITING = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
_CONFIG_WAITING = {"CreateContainerConfigError", "CreateContainerError"}


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line
    return lines[-1] if lines else ""


def pod_problem(pod: Any) -> tuple[str, str] | None:
    """(reason, message) when the pod's worker container cannot run; None when it is fine."""
    name = pod.get("metadata", {}).get("name", "?")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _IMAGE_WAITING:
            return (
                "ImageNotAvailable",
                f"pod {name}: {waiting.get('reason')}: {waiting.get('message', '')}".strip(),
            )
        if waiting.get("reason") in _CONFIG_WAITING:
            return "ConfigError", f"pod {name}: {waiting.get('message') or waiting.get('reason')}"
        terminated = state.get("terminated") or last.get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            line = _error_line(str(terminated.get("message") or ""))
            reason = (
                HANDLERS_NOT_IMPORTABLE if "--handlers" in line or "cannot import" in line else WORKER_FAILING
            )
            restarts = cs.get("restartCount", 0)
            detail = line or f"exit code {terminated.get('exitCode')} ({terminated.get('reason', '')})"
            return reason, f"pod {name} (restarts {restarts}): {detail}"
    return None


def pool_status(pool: Any, deployment: Any | None, pods: list[Any]) -> tuple[dict[str, Any], bool]:
    """(status without conditions, whether the pool is ready)."""
    spec = pool.get("spec") or {}
    desired = int(spec.get("minReplicas", 1))
    dstatus = (deployment or {}).get("status") or {}
    ready = int(dstatus.get("readyReplicas") or 0)
    problems = [p for p in (pod_problem(pod) for pod in pods) if p is not None]
    if problems:
        reason, message = problems[0]
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more pods)"
    elif deployment is None:
        reason, message = PROGRESSING, "creating the Deployment"
    elif desired == 0:
        reason, message = SCALED_TO_ZERO, "minReplicas is 0: no worker pods"
    elif ready >= desired:
        reason, message = READY, f"{ready}/{desired} workers ready"
    else:
        reason, message = PROGRESSING, f"{ready}/{desired} workers ready"
    is_ready = not problems and ready >= desired and deployment is not None
    return {
        "desiredReplicas": desired,
        "readyReplicas": ready,
        "reason": reason,
        "message": message,
        "observedGeneration": pool.get("metadata", {}).get("generation"),
    }, is_ready
