"""A user's own image, as docs/operator.md ("Your own handlers") tells them to build it:
FROM the FlowKit image, one module of handlers written from the seed docs, a pool
pointing at it, and a FlowTask of the seed's graph run by those pods."""

from __future__ import annotations

import uuid
from pathlib import Path

from .release import Release, flowtask

# The seed docs' handler ("Key Concepts" > "Handlers"), with the imports it needs.
SEED_HANDLERS = """
from typing import AsyncIterator

from flowkit.worker.handlers.base import Batch, BatchResult, FinalizationResult, Handler, RunContext


class MyProcessorHandler(Handler):
    async def iter_batches(self, input_data) -> AsyncIterator[Batch]:
        for item in input_data.get("input_inline", {}).get("items", []):
            yield Batch(batch_uid=item["id"], payload=item)

    async def process_batch(self, batch: Batch, ctx: RunContext) -> BatchResult:
        words = len(str(batch.payload["data"]).split())
        print(f"my_handlers processed {batch.batch_uid}: {words} words", flush=True)
        return BatchResult(success=True, metrics={"words": words})

    async def finalize(self, ctx: RunContext) -> FinalizationResult:
        return FinalizationResult(metrics={"total_processed": ctx.processed_count})


HANDLERS = {"processor": MyProcessorHandler()}
"""


def test_a_pool_of_the_users_own_image_runs_handlers_written_from_the_seed_docs(
    readme_release: Release, target: object, flowkit_image: tuple[str, str], tmp_path: Path
) -> None:
    repository, tag = flowkit_image
    (tmp_path / "my_handlers.py").write_text(SEED_HANDLERS)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {repository}:{tag}\nCOPY my_handlers.py /opt/flowkit/my_handlers.py\n"
    )
    mine = f"flowkit-mine:{uuid.uuid4().hex[:8]}"
    target.build(mine, tmp_path / "Dockerfile")  # type: ignore[attr-defined]

    pool = f"mine-{uuid.uuid4().hex[:5]}"
    readme_release.kubectl.apply(
        {
            "apiVersion": "flowkit.io/v1alpha1",
            "kind": "FlowWorkerPool",
            "metadata": {"name": pool},
            "spec": {"roles": ["processor"], "handlers": "my_handlers:HANDLERS", "image": mine},
        }
    )
    items = [{"id": f"doc-{i}", "data": "hello " * (i + 1)} for i in range(3)]
    name = f"seed-{uuid.uuid4().hex[:5]}"
    node = {"node_id": "process_data", "type": "processor", "io": {"input_inline": {"items": items}}}
    proc = readme_release.apply(flowtask(name, [node]))
    assert proc.returncode == 0, proc.stderr
    readme_release.kubectl.wait(f"ft/{name}", "condition=Succeeded", timeout=240)

    status = readme_release.status(name)
    assert (status["phase"], status["progress"]) == ("Succeeded", "1/1")
    assert status["nodes"]["process_data"]["batches"] == 3
    logs = readme_release.kubectl("logs", f"deploy/{pool}-workers", "--tail=-1")
    assert "my_handlers processed doc-2: 3 words" in logs, logs
    stored = readme_release.store_task(status["taskId"])
    assert stored is not None
    assert stored["nodes"]["process_data"]["metrics"] == {"words": 6.0, "total_processed": 3.0}
    readme_release.kubectl("delete", "fwp", pool, "--wait=false")
