"""Per-job settings beyond routing: result and failure TTLs, `meta` (RQ's own field) and tags, with their bounds.

- TTLs go to the job hash's `result_ttl` / `failure_ttl` (RQ's fields), which the lifecycle scripts read
  when the job ends: the job hash, its result stream and its registry entry expire after them. A job that
  sets none gets its task's decorator default (`@task(result_ttl_s=...)`, applied by the worker that runs
  it), else FERRY_RESULT_TTL_S / FERRY_FAILURE_TTL_S.
- `meta` is a small JSON object stored in RQ's `meta` field exactly as RQ 3's JSONSerializer writes it
  (JSON text), so `rq.job.Job.fetch(id, serializer=JSONSerializer).meta` and rq-dashboard show it.
- Tags are short strings kept on the job (`ferry_tags`, comma-joined: a tag has no comma) and indexed in
  `ferry:tag:<tag>`, a sorted set of job ids scored by submit time. The index cannot grow without
  bound: `ENQUEUE` trims it to its newest `TAG_INDEX_MAX` ids and lets it expire with the longest TTL of
  the jobs it indexes; ids whose job expired are pruned when a listing meets them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared import keys, wire

if TYPE_CHECKING:
    from shared.settings import Settings

META_MAX_BYTES = 4096  # meta as JSON text
MAX_TAGS = 10
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
TAG_INDEX_MAX = 10_000  # newest job ids kept per tag
MAX_TTL_S = 365 * 86_400
TAGS_FIELD = "ferry_tags"


def check_meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The meta, if its JSON fits the bound; ValueError naming the size, the bound and the fix otherwise."""
    if meta is None:
        return None
    size = len(meta_text(meta))
    if size > META_MAX_BYTES:
        raise ValueError(f"meta is {size:,} bytes of JSON, above the bound of {META_MAX_BYTES:,} bytes; keep meta "
                         "small (labels, ids) and pass data as args or objects")
    return meta


def check_tags(tags: list[str]) -> list[str]:
    """Tags without duplicates (order kept); ValueError when there are too many."""
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise ValueError(f"{len(unique)} tags given, at most {MAX_TAGS} are allowed per job")
    return unique


def meta_text(meta: dict[str, Any]) -> str:
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fields(meta: dict[str, Any] | None, tags: list[str]) -> dict[str, str]:
    """Job hash fields for the job's meta and tags (the defaults when it has neither)."""
    out: dict[str, str] = {}
    if meta:
        out["meta"] = meta_text(meta)
    if tags:
        out[TAGS_FIELD] = ",".join(tags)
    return out


def leave_ttls_to_the_task(fields: dict[str, Any], result_ttl_s: int | None, failure_ttl_s: int | None) -> None:
    """Drop the TTL fields the job did not set: then the task's decorator default (`@task(result_ttl_s=)`), else
    FERRY_RESULT_TTL_S / FERRY_FAILURE_TTL_S, applies when the worker records the job's end."""
    if result_ttl_s is None:
        fields.pop("result_ttl", None)
    if failure_ttl_s is None:
        fields.pop("failure_ttl", None)


def longest_ttl_s(result_ttl_s: int | None, failure_ttl_s: int | None, settings: Settings) -> int:
    """At least as long as the job can be kept (its own TTLs, else the defaults): its idempotency key and its
    tags' index live this long."""
    return max(result_ttl_s or 0, failure_ttl_s or 0, settings.result_ttl_s, settings.failure_ttl_s)


def tag_keys(tags: list[str]) -> list[str]:
    """The index keys ENQUEUE adds the job to (its KEYS from the 4th on)."""
    return [keys.tag(tag) for tag in tags]


def read_meta(raw: bytes | None) -> dict[str, Any]:
    """The user's meta from a job hash's `meta` field; {} for Ferry's own marker, a foreign or unreadable value."""
    if not raw or len(raw) > 16 * META_MAX_BYTES:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}  # RQ's pickle serializer: never unpickled
    if not isinstance(value, dict) or value == json.loads(wire.FERRY_META):
        return {}
    return value


def read_tags(raw: bytes | None) -> list[str]:
    return [t for t in (raw or b"").decode(errors="replace").split(",") if t]
