"""/v1/workflows: submit a whole workflow in one request (all or nothing), read it in one, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from services.producer.deps import AsyncClientDep
from services.producer.schemas import errors
from shared.workflows import WorkflowInfo, WorkflowRequest, WorkflowSubmitted

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

WorkflowId = Annotated[str, Path(min_length=1, max_length=64, description="the id `POST /v1/workflows` returned")]

EXAMPLES = {
    "map_reduce": {
        "summary": "Fan-out over slices, then a reduce callback that gets their results in order",
        "value": {"workflow": {"chain": [
            {"group": [{"task": "array.stats", "args": {"data": {"id": "0123456789abcdef0123456789abcdef",
                                                                 "kind": "array", "dtype": "<f8", "shape": [1000],
                                                                 "nbytes": 8000}, "start": s, "stop": s + 500}}
                       for s in (0, 500)]},
            {"task": "array.combine_stats"},
        ]}},
    },
    "chain": {
        "summary": "A chain: each step's result goes to the next step's `input` parameter (or the one it names)",
        "value": {"workflow": {"chain": [{"task": "echo", "args": {"value": 1}}, {"task": "echo", "input": "value"}]}},
    },
}


@router.post(
    "",
    status_code=202,
    response_model=WorkflowSubmitted,
    summary="Submit a workflow",
    description=(
        "A tree of steps (`{task, args, input, on_failure}`), groups (`{group: [...]}`, side by side; their result "
        "is the list of the members' results) and chains (`{chain: [...]}`, each node gets the previous one's "
        "result in its `input` parameter). Every job is validated (task catalog, args, object references) before "
        "anything is enqueued; the error names the node (`workflow.chain[1].group[3]`). Then one script enqueues it."
    ),
    responses=errors(400, 404, 409, 422),
)
async def submit(request: Annotated[WorkflowRequest, Body(openapi_examples=EXAMPLES)],
                 client: AsyncClientDep) -> WorkflowSubmitted:
    return await client.submit_workflow(request)


@router.get("/{workflow_id}", response_model=WorkflowInfo, summary="A workflow's status and every result",
            responses=errors(404))
async def status(
    workflow_id: WorkflowId,
    client: AsyncClientDep,
    wait_s: Annotated[float, Query(ge=0, le=300, description="seconds to wait for every job to end")] = 0,
) -> WorkflowInfo:
    # Between two reads the wait holds no thread and no connection: it waits on the last pending job's end.
    return await client.workflow(workflow_id, wait_s=wait_s)


@router.delete("/{workflow_id}", response_model=WorkflowInfo, summary="Cancel a workflow",
               description="Cancels every job not yet ended; running ones are interrupted.",
               responses=errors(404, 409))
async def cancel(workflow_id: WorkflowId, client: AsyncClientDep) -> WorkflowInfo:
    return await client.cancel_workflow(workflow_id)
