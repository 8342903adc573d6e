"""Reading the catalog on the submit path: `serves` and validation answer as before, an unchanged read is not
parsed again."""

from __future__ import annotations

import pytest

from shared import catalog
from shared.errors import InvalidArgs

SCHEMA = {"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}}, "required": ["seconds"],
          "additionalProperties": False}


def entry(node: str, queues: list[str], tasks: list[str]) -> str:
    return catalog.NodeCatalog(node=node, queues=queues, tasks=[
        catalog.CatalogTask(name=t, input_schema=SCHEMA, version="v1") for t in tasks]).model_dump_json()


def test_serves_is_true_only_for_a_task_and_queue_one_node_has_together() -> None:
    read = catalog.parse([entry("a", ["high"], ["sleep"]), None, entry("b", ["low"], ["echo"])])

    assert read.serves("sleep", "high") and read.serves("echo", "low")
    assert not read.serves("sleep", "low") and not read.serves("echo", "high") and not read.serves("nope", "high")


def test_validation_against_the_schema_names_each_field_every_time() -> None:
    read = catalog.parse([entry("a", ["default"], ["sleep"])])

    for _ in range(2):  # the second call uses the validator kept from the first
        with pytest.raises(InvalidArgs) as caught:
            read.validate("sleep", {"seconds": -1, "extra": 1})
        assert {p["field"] for p in caught.value.details["errors"]} == {"seconds", "extra"}
    read.validate("sleep", {"seconds": 1})


def test_the_same_entries_give_the_same_catalog_and_a_change_a_new_one() -> None:
    first = catalog.parse([entry("a", ["default"], ["sleep"])])

    assert catalog.parse([entry("a", ["default"], ["sleep"])]) is first
    changed = catalog.parse([entry("a", ["default"], ["sleep"]), entry("b", ["low"], ["echo"])])
    assert changed is not first and changed.serves("echo", "low") and not first.serves("echo", "low")
