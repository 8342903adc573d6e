"""Queues, nodes and many jobs at once: `ferry info`, `jobs`, `requeue`, `purge`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from services.admin.common import (
    NO_NODE,
    ago,
    command,
    console,
    empty,
    esc,
    fail,
    human_bytes,
    note,
    open_client,
    print_json,
    short,
    styled_status,
    table,
)
from shared import job_listing
from shared.catalog import unservable_jobs, unservable_lines
from shared.client import Client
from shared.errors import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_USAGE, InvalidRequest, JobNotFound
from shared.models import JobStatus, NodeInfo
from shared.purge import counts_text
from shared.redis_conn import redact

CACHE_COUNTERS = ("bytes_from_redis", "bytes_from_shm", "hits", "misses", "evictions", "resident_bytes")


@command
def info(
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as one JSON document.")] = False,
) -> None:
    """Show queues (jobs by status), nodes (liveness, processes, shared-memory cache counters) and worker processes.

    A node is what `ferry worker` runs on a machine; its worker processes (RQ's workers) run the jobs.
    """
    with open_client() as client:
        server = client.admin.server_info()
        queues, nodes, processes = client.admin.queues(), client.admin.nodes(), client.admin.workers()
        unservable = unservable_jobs(client.conn, [q.name for q in queues])
        url = redact(client.url)
    if json_output:
        print_json({"redis": {"url": url, "version": server["server"]}, "queues": queues, "nodes": nodes,
                    "worker_processes": processes, "unservable": unservable})
        return
    console.print(f"[bold]Redis[/bold] {url} (server {server['server']})", highlight=False)
    console.print()
    queue_table = table("queue", "queued", "waiting", "scheduled", "started", "finished", "failed", "canceled",
                        "paused", title="Queues")
    for q in queues:
        queue_table.add_row(esc(q.name), str(q.queued), str(q.waiting), str(q.scheduled), str(q.started),
                            str(q.finished), f"[red]{q.failed}[/red]" if q.failed else "0", str(q.canceled),
                            "[yellow]paused[/yellow]" if q.paused else "-")
    console.print(queue_table)
    console.print()
    if nodes:
        console.print(node_table(nodes))
        console.print()
        console.print(cache_table(nodes))
    else:
        console.print("[bold]Nodes[/bold]", highlight=False)
        console.print(NO_NODE, highlight=False)
    console.print()
    if processes:
        process_table = table("worker process", "node", "pid", "state", "current job", "ok", "failed", "heartbeat",
                              title="Worker processes")
        for w in processes:
            process_table.add_row(esc(w.name), esc(w.node or "-"), str(w.pid or "-"), esc(w.state),
                                  esc(w.current_job or "-"),
                                  str(w.successful), str(w.failed), ago(w.last_heartbeat))
        console.print(process_table)
    elif nodes:
        console.print("[bold]Worker processes[/bold]", highlight=False)
        empty("worker processes")
    for line in unservable_lines(unservable):
        console.print(f"[yellow]{esc(line)}[/yellow]", highlight=False)


def node_table(nodes: list[NodeInfo], title: str = "Nodes") -> Table:
    """Nodes: liveness, processes, queues, shared-memory budget."""
    t = table("node", "host", "alive", "processes", "queues", "shm budget", "heartbeat", title=title)
    for n in nodes:
        t.add_row(esc(n.id), esc(n.host), "[green]yes[/green]" if n.alive else "[red]no[/red]", str(n.processes),
                  esc(",".join(n.queues)), human_bytes(n.shm_budget_bytes), ago(n.last_heartbeat))
    return t


def cache_table(nodes: list[NodeInfo], title: str = "Node caches (since each node started)") -> Table:
    """Each node's shared-memory cache counters, as its worker processes report them to Redis."""
    t = table("node", "resident", "from redis", "from shm", "hits", "misses", "evictions", title=title)
    for n in nodes:
        s = {name: n.stats.get(name, 0) for name in CACHE_COUNTERS}
        t.add_row(esc(n.id), human_bytes(s["resident_bytes"]), human_bytes(s["bytes_from_redis"]),
                  human_bytes(s["bytes_from_shm"]), str(s["hits"]), str(s["misses"]), str(s["evictions"]))
    return t


@command
def jobs(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue (default: all).")] = None,
    status: Annotated[
        JobStatus | None,
        typer.Option("--status", "-s", case_sensitive=False, help="Only jobs with this status (default: all)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="At most this many jobs.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print the jobs as a JSON list.")] = False,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only jobs of this task.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only jobs with this tag (newest first).")] = None,
) -> None:
    """List jobs by queue, status, task and tag (exact filters; queued jobs in queue order, others newest first)."""
    with open_client() as client:
        if task is None and tag is None:
            found = client.admin.jobs(queue, status, limit)
        else:
            found = job_listing.list_jobs(client.conn, client.settings, status, queue, task, tag, limit)
    if json_output:
        print_json(found)
        return
    if not found:
        where = " ".join(filter(None, [f"in queue {queue}" if queue else "", f"of task {task}" if task else "",
                                      f"tagged {tag}" if tag else ""]))
        empty(" ".join(filter(None, [status.value if status else None, "jobs"])), where)
        return
    t = table("job", "task", "queue", "status", "attempts", "ended", "error")
    for j in found:
        t.add_row(j.id, esc(j.task or "?"), esc(j.queue or "?"), styled_status(j.status), str(j.attempts),
                  ago(j.ended_at),
                  esc(short(j.error or "", 50)))
    console.print(t)


@command
def requeue(
    job_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="JOB_ID", help="Failed jobs to requeue.", show_default=False),
    ] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every failed job (of --queue, or of every queue).")] = False,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only failed jobs of this queue.")] = None,
    _failed: Annotated[
        bool,
        typer.Option("--failed", hidden=True, help="Accepted and ignored (once required)."),
    ] = False,
) -> None:
    """Put failed jobs back on their queue for one more attempt: `ferry requeue --all` or `ferry requeue ID...`.

    Only failed jobs can be requeued; a job id that is not a failed job is reported (exit 4 unknown, 5 not failed).
    """
    if bool(all_jobs) == bool(job_ids):
        raise InvalidRequest("pass either --all or one or more job ids (not both)")
    with open_client() as client:
        requeued = client.admin.requeue_failed(queue, job_ids or None)
        missing = [] if all_jobs else [i for i in job_ids or [] if i not in requeued]
        statuses = {i: _status_of(client, i) for i in missing}
    if requeued:
        noun = "job" if len(requeued) == 1 else "jobs"
        console.print(f"requeued {len(requeued)} failed {noun}", highlight=False)
    elif all_jobs:
        empty("failed jobs", f"in queue {queue}" if queue else "")
    if missing:
        described = ", ".join(f"{i} ({statuses[i]})" for i in missing)
        code = EXIT_NOT_FOUND if any(s == "not found" for s in statuses.values()) else EXIT_CONFLICT
        fail(f"not requeued, not a failed job{f' of queue {queue}' if queue else ''}: {described}", code)


def _status_of(client: Client, job_id: str) -> str:
    try:
        status = client.status(job_id).status
    except JobNotFound:
        return "not found"
    return status.value if isinstance(status, JobStatus) else str(status)


@command
def purge(
    queue: Annotated[str, typer.Argument(help="The queue to empty.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop every job of a queue that no worker holds yet. Asks first unless --yes.

    Removes, in one atomic step: its queued jobs, its scheduled jobs (delayed ones and retries waiting out
    a back-off) and its jobs set aside by a concurrency or rate limit. Their idempotency keys can be used
    again; jobs that depend on them fail, naming them. Started jobs finish; ended jobs, their results and
    deferred jobs (waiting for their dependencies) stay.
    """
    with open_client() as client:
        info = next((q for q in client.admin.queues() if q.name == queue), None)
        counts = (info.queued, info.scheduled, info.waiting) if info is not None else None
        if counts is not None and not sum(counts):
            empty("queued, scheduled or limit-waiting jobs", f"in queue {queue}")
            return
        if not yes and counts is not None:
            if not sys.stdin.isatty():
                fail(f"queue {queue} holds {counts_text(*counts)}; pass --yes to purge without a prompt", EXIT_USAGE)
            if not typer.confirm(f"Drop {counts_text(*counts)} from queue {queue}?", default=False):
                note("nothing purged")  # a person said no: nothing to do, exit 0
                return
        dropped = client.admin.purge(queue)  # InvalidRequest naming the queues for an unknown queue
    console.print(f"purged {counts_text(dropped.queued, dropped.scheduled, dropped.waiting)} from queue {queue}",
                  highlight=False)
    if dropped.total:
        note("started jobs were not touched")
