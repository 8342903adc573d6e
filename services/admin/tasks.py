"""`ferry tasks`: what can be submitted, and with which arguments."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.admin.common import command, esc, table
from services.admin.common import console, print_json, settings
from shared.models import TaskInfo
from shared.tasks import TaskSpec, load_tasks

OBJECT_TYPE = "object"  # an Array parameter: pass a stored object, `--arg data=@obj:ID`


@command
def tasks(json_output: Annotated[bool, typer.Option("--json", help="Print name, description and input schema as JSON.")] = False) -> None:
    """List the registered tasks (built-ins and FERRY_TASK_MODULES) with their arguments."""
    specs = load_tasks(settings().task_modules).specs()
    if json_output:
        print_json([TaskInfo(name=s.name, description=s.description, input_schema=s.input_schema()) for s in specs])
        return
    t = table("task", "arguments", "description")
    for spec in specs:
        t.add_row(esc(spec.name), esc("\n".join(describe_args(spec)) or "-"), esc(spec.description))
    console.print(t)
    console.print(f"\nsubmit one with: ferry submit TASK --arg NAME=VALUE   (an {OBJECT_TYPE} argument takes @obj:ID)",
                  highlight=False)


def describe_args(spec: TaskSpec) -> list[str]:
    """One `name: type [= default]` line per argument, `(required)` where there is no default."""
    schema = spec.input_schema()
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema.get("properties", {}).items():
        kind = OBJECT_TYPE if name in spec.array_params else type_name(prop)
        if name in required:
            lines.append(f"{name}: {kind} (required)")
        elif "default" in prop and prop["default"] is not None:
            lines.append(f"{name}: {kind} = {prop['default']!r}")
        else:
            lines.append(f"{name}: {kind}")
    return lines


def type_name(prop: dict[str, Any]) -> str:
    """A short name for a JSON-schema type: `integer`, `list[number]`, `integer | null`, `any`."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(type_name(p) for p in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array":
        return f"list[{type_name(prop.get('items', {}))}]"
    return str(kind) if kind else "any"
