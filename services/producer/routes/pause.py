"""Pausing and resuming queues: `POST /v1/queues/{name}/pause|resume`, and `/v1/queues/pause|resume` for all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.producer.deps import ClientDep
from services.producer.schemas import errors
from shared.models import QUEUE_PATTERN, QueueInfo

router = APIRouter(prefix="/v1/queues", tags=["service"])

QueueName = Annotated[str, Path(pattern=QUEUE_PATTERN, description="a queue name")]
WHAT = ("Queued jobs stay queued and running jobs finish; no worker claims from a paused queue until it is resumed. ")


@router.post("/pause", response_model=list[QueueInfo], summary="Pause every queue (as `rq suspend`)",
             description=WHAT + "Sets RQ's own `rq:suspended`, so `rq resume` resumes too.", responses=errors())
def pause_all(client: ClientDep) -> list[QueueInfo]:
    return client.pause()


@router.post("/resume", response_model=list[QueueInfo], summary="Resume every queue (also ends an `rq suspend`)",
             description="Clears every pause, Ferry's and RQ's; idle workers wake at once.", responses=errors())
def resume_all(client: ClientDep) -> list[QueueInfo]:
    return client.resume()


@router.post("/{name}/pause", response_model=QueueInfo, summary="Pause one queue", description=WHAT,
             responses=errors(422))
def pause(name: QueueName, client: ClientDep) -> QueueInfo:
    return _one(client.pause(name), name)


@router.post("/{name}/resume", response_model=QueueInfo, summary="Resume one queue",
             description="Workers serving it wake at once; a global pause (`rq suspend`) still holds.",
             responses=errors(422))
def resume(name: QueueName, client: ClientDep) -> QueueInfo:
    return _one(client.resume(name), name)


def _one(queues: list[QueueInfo], name: str) -> QueueInfo:
    found = [q for q in queues if q.name == name]
    if found:
        return found[0]
    everything = bool(queues) and all(q.paused for q in queues)
    return QueueInfo(name=name, queued=0, started=0, finished=0, failed=0, canceled=0, paused=everything)
