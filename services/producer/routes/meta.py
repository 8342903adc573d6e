"""What the service knows about itself: tasks, queues, nodes, and the health check."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.producer.deps import AsyncClientDep, ClientDep
from services.producer.schemas import Health, errors
from shared.catalog import ServedTask
from shared.models import NodeInfo, QueueInfo
from shared.redis_conn import ping

router = APIRouter(prefix="/v1", tags=["service"])
health_router = APIRouter(tags=["service"])


@router.get(
    "/tasks",
    response_model=list[ServedTask],
    summary="The tasks the live nodes serve, with their input schemas",
    description="The task catalog the running worker nodes publish: per task, its `input_schema` (the JSON Schema "
    "a job's `args` must satisfy), the `queues` it is served on, the `nodes` serving it and each node's "
    "code `versions`. "
    "Empty while no node runs.",
)
async def tasks(client: AsyncClientDep) -> list[ServedTask]:
    catalog = await client.catalog()
    return [catalog.tasks[name] for name in catalog.names()]


@router.get("/queues", response_model=list[QueueInfo], summary="Queues and their job counts", responses=errors())
def queues(client: ClientDep) -> list[QueueInfo]:
    return client.admin.queues()


@router.get(
    "/nodes",
    response_model=list[NodeInfo],
    summary="Worker nodes",
    description="Every node that registered, with `alive` false once its heartbeat is older than "
    "FERRY_ABANDONED_AFTER_S.",
)
def nodes(client: ClientDep) -> list[NodeInfo]:
    return client.admin.nodes()


@health_router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness and Redis reachability (no token needed)",
    responses=errors(503),
)
def healthz(request: Request) -> Health:
    # A connection of its own, without retries and with short time-outs: a health check must answer fast.
    ping(request.app.state.health_conn, request.app.state.client.url)
    return Health()
