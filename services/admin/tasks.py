"""`ferry tasks`: what the running stack serves (the task catalog the live nodes publish), and with which arguments."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.admin.common import command, console, esc, open_client, print_json, table
from shared.catalog import ServedTask

OBJECT_TYPE = "object"  # an ObjectRef parameter (a task's Array): pass a stored object, `--arg data=@obj:ID`


@command
def tasks(
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="Print each task's name, description, input schema, queues, nodes and versions as JSON."
        ),
    ] = False,
) -> None:
    """List the tasks the live worker nodes serve, with their arguments, queues and nodes (no task code needed here)."""
    with open_client() as client:
        catalog = client.catalog()
    served = [catalog.tasks[name] for name in catalog.names()]
    if json_output:
        print_json(served)
        return
    if not served:
        console.print("no live worker node serves any task; start one with `ferry worker`", highlight=False)
        return
    t = table("task", "arguments", "queues", "nodes", "description")
    for task in served:
        t.add_row(
            esc(task.name),
            esc("\n".join(describe_args(task.input_schema)) or "-"),
            esc(",".join(task.queues)),
            esc(nodes_text(task)),
            esc(task.description),
        )
    console.print(t)
    console.print(
        f"\nsubmit one with: ferry submit TASK --arg NAME=VALUE   (an {OBJECT_TYPE} argument takes @obj:ID)",
        highlight=False,
    )


def nodes_text(task: ServedTask) -> str:
    """`n1, n2`, with the code version when the nodes run different code for the task."""
    if len(set(task.versions.values())) <= 1:
        return ", ".join(task.nodes)
    return ", ".join(f"{n} ({task.versions[n]})" for n in task.nodes)


def describe_args(schema: dict[str, Any]) -> list[str]:
    """One `name: type [= default]` line per argument, `(required)` where there is no default."""
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema.get("properties", {}).items():
        kind = type_name(prop)
        if name in required:
            lines.append(f"{name}: {kind} (required)")
        elif "default" in prop and prop["default"] is not None:
            lines.append(f"{name}: {kind} = {prop['default']!r}")
        else:
            lines.append(f"{name}: {kind}")
    return lines


def type_name(prop: dict[str, Any]) -> str:
    """A short name for a JSON-schema type: `integer`, `list[number]`, `integer | null`, `object` (ObjectRef), `any`."""
    if "$ref" in prop:
        ref = str(prop["$ref"]).rsplit("/", 1)[-1]
        return OBJECT_TYPE if ref == "ObjectRef" else ref
    if "anyOf" in prop:
        return " | ".join(type_name(p) for p in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array":
        return f"list[{type_name(prop.get('items', {}))}]"
    return str(kind) if kind else "any"
