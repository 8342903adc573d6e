"""Array jobs for the plain-RQ (and Ray) variants of shared_input.py; `rq worker` imports them by dotted path.

`stats` computes exactly what Ferry's `array.stats` task computes, so every variant does the same work.
"""

from __future__ import annotations

import numpy as np
from rq import get_current_job

# Variant (b) stores the array as keys of 16 MiB by default (shared_input.py --rq-piece-mib): no huge
# command or socket wait, and Redis refuses any single string above 512 MB (proto-max-bulk-len).
PIECE_BYTES = 16 * 1024 * 1024


def stats(data: np.ndarray) -> dict[str, float | int]:
    """Count, sum, min, max and mean of the flattened array (as Ferry's `array.stats` without start/stop)."""
    part = data.reshape(-1)
    total = float(part.sum())
    return {"count": int(part.size), "sum": total, "min": float(part.min()), "max": float(part.max()),
            "mean": total / part.size}


def stats_of_argument(data: np.ndarray) -> dict[str, float | int]:
    """Variant (a): the array arrives inside the job (pickled and compressed by RQ, per job)."""
    return stats(data)


def stats_of_keys(prefix: str, nbytes: int, dtype: str, piece_bytes: int = PIECE_BYTES) -> dict[str, float | int]:
    """Variant (b): the array was SET once in Redis as pieces `<prefix>:<n>`; every job GETs them all back."""
    conn = get_current_job().connection
    buffer = np.empty(nbytes, dtype=np.uint8)
    for index, start in enumerate(range(0, nbytes, piece_bytes)):
        piece = conn.get(f"{prefix}:{index}")
        buffer[start : start + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    return stats(buffer.view(np.dtype(dtype)))
