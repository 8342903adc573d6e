"""Objects over HTTP: .npy and raw uploads, downloads, refusals (pickles, bad dtypes), delete, and a job over one."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from shared.client import Client

NPY = {"Content-Type": "application/x-npy"}
RAW = {"Content-Type": "application/octet-stream"}


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


class CreatesFileWhenUnpickled:
    """Unpickling this runs `open(path, "w")`: proof, by a file on disk, that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_an_npy_upload_round_trips_as_metadata_and_as_npy(api: httpx.Client, client: Client) -> None:
    array = np.arange(12, dtype=np.float64).reshape(3, 4) / 7

    answer = api.post("/v1/objects", content=npy_bytes(array), headers=NPY)

    assert answer.status_code == 201, answer.text
    ref = answer.json()
    assert (ref["kind"], ref["dtype"], ref["shape"], ref["nbytes"]) == ("array", "<f8", [3, 4], 96)
    assert answer.headers["Location"] == f"/v1/objects/{ref['id']}"
    assert np.array_equal(client.get(ref["id"]), array)  # really in Redis, readable by the Python client

    assert api.get(f"/v1/objects/{ref['id']}").json() == ref
    as_npy = api.get(f"/v1/objects/{ref['id']}", headers={"Accept": "application/x-npy"})
    assert as_npy.headers["Content-Type"] == "application/x-npy"
    assert np.array_equal(np.load(io.BytesIO(as_npy.content), allow_pickle=False), array)
    by_query = api.get(f"/v1/objects/{ref['id']}", params={"format": "npy"})
    assert by_query.content == as_npy.content


def test_a_fortran_order_npy_is_stored_in_c_order(api: httpx.Client, client: Client) -> None:
    array = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))

    ref = api.post("/v1/objects", content=npy_bytes(array), headers=NPY).json()

    assert np.array_equal(client.get(ref["id"]), array)


def test_raw_bytes_with_dtype_and_shape_become_an_array(api: httpx.Client, client: Client) -> None:
    array = np.arange(6, dtype="<i4").reshape(2, 3)

    answer = api.post("/v1/objects", content=array.tobytes(), headers=RAW, params={"dtype": "int32", "shape": "2,3"})

    assert answer.status_code == 201, answer.text
    assert (answer.json()["dtype"], answer.json()["shape"]) == ("<i4", [2, 3])
    assert np.array_equal(client.get(answer.json()["id"]), array)
    raw = api.get(f"/v1/objects/{answer.json()['id']}", params={"format": "raw"})
    assert raw.content == array.tobytes() and raw.headers["X-Ferry-Shape"] == "2,3"


def test_raw_bytes_without_dtype_are_a_bytes_object(api: httpx.Client) -> None:
    answer = api.post("/v1/objects", content=b"\x00hello\xff", headers=RAW, params={"ttl_s": 60})

    assert answer.status_code == 201
    ref = answer.json()
    assert (ref["kind"], ref["nbytes"]) == ("bytes", 7)
    data = api.get(f"/v1/objects/{ref['id']}", headers={"Accept": "application/x-npy"})
    assert data.headers["Content-Type"] == "application/octet-stream" and data.content == b"\x00hello\xff"
    listed = {o["ref"]["id"]: o for o in api.get("/v1/objects").json()}
    assert 0 < listed[ref["id"]]["ttl_s"] <= 60


@pytest.mark.parametrize(
    ("params", "field"),
    [({"dtype": "float64", "shape": "2,2"}, "query.shape"), ({"dtype": "float64"}, "query.dtype"), ({"shape": "3"}, "query.shape")],
)
def test_a_dtype_or_shape_that_does_not_fit_the_bytes_is_422(api: httpx.Client, params: dict, field: str) -> None:
    answer = api.post("/v1/objects", content=b"\x00" * 12, headers=RAW, params=params)  # 12 bytes: not 4 or 1.5 doubles

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["error"]["errors"]] == [field]


@pytest.mark.parametrize("dtype", ["object", "U3", "datetime64[s]", "f8,i4", "nonsense"])
def test_a_non_numeric_dtype_is_422(api: httpx.Client, dtype: str) -> None:
    answer = api.post("/v1/objects", content=b"\x00" * 24, headers=RAW, params={"dtype": dtype})

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["errors"][0]["field"] == "query.dtype"


def test_a_pickled_npy_is_refused_and_never_unpickled(api: httpx.Client, tmp_path: Path) -> None:
    def pickled(marker: Path) -> bytes:
        array = np.empty(1, dtype=object)
        array[0] = CreatesFileWhenUnpickled(marker)
        return npy_bytes(array, allow_pickle=True)

    probe = tmp_path / "probe"
    np.load(io.BytesIO(pickled(probe)), allow_pickle=True)
    assert probe.exists()  # the payload works: loading it with pickles allowed runs it
    marker = tmp_path / "unpickled-by-the-producer"

    answer = api.post("/v1/objects", content=pickled(marker), headers=NPY)

    assert 400 <= answer.status_code < 500
    assert "not numeric" in answer.json()["error"]["message"]
    assert not marker.exists()
    assert api.get("/v1/objects").json() == []


def test_a_truncated_or_foreign_npy_body_is_400(api: httpx.Client) -> None:
    whole = npy_bytes(np.arange(10, dtype=np.float64))

    for body in (whole[:-8], b"PK\x03\x04 a zip, not an npy", b"hello"):
        answer = api.post("/v1/objects", content=body, headers=NPY)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["type"] == "InvalidRequest"


def test_an_upload_without_a_known_content_type_is_415(api: httpx.Client) -> None:
    answer = api.post("/v1/objects", content=b"1234", headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert answer.status_code == 415
    assert "application/x-npy" in answer.json()["error"]["message"]


def test_deleting_an_object_is_204_then_404(api: httpx.Client) -> None:
    ref = api.post("/v1/objects", content=b"bye", headers=RAW).json()

    assert api.delete(f"/v1/objects/{ref['id']}").status_code == 204
    assert api.get(f"/v1/objects/{ref['id']}").status_code == 404
    again = api.delete(f"/v1/objects/{ref['id']}")
    assert again.status_code == 404 and again.json()["error"]["type"] == "ObjectNotFound"


def test_an_array_stats_job_reads_an_object_uploaded_over_http(api: httpx.Client, start_node) -> None:
    start_node(processes=1)
    array = np.arange(1000, dtype=np.float64)
    ref = api.post("/v1/objects", content=npy_bytes(array), headers=NPY).json()

    job = api.post("/v1/jobs", json={"task": "array.stats", "args": {"data": ref, "start": 10}})
    assert job.status_code == 202, job.text
    result = api.get(f"/v1/jobs/{job.json()['id']}/result", params={"wait_s": 10}).json()

    assert result["status"] == "finished", result
    assert result["value"]["sum"] == float(array[10:].sum()) == 499455.0
    assert result["value"]["count"] == 990


def test_redis_out_of_memory_is_507_and_leaves_no_chunks(start_producer, conn: redis.Redis) -> None:
    api = start_producer(FERRY_OBJECT_CHUNK_BYTES=str(64 * 1024)).http  # many small writes: the first ones fit
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", used + 512 * 1024)
    try:
        answer = api.post("/v1/objects", content=b"\x01" * (4 * 1024 * 1024), headers=RAW)
    finally:
        conn.config_set("maxmemory", 0)

    assert answer.status_code == 507, answer.text
    error = answer.json()["error"]
    assert error["type"] == "RedisFull" and "out of memory" in error["message"] and "maxmemory" in error["message"]
    assert conn.keys("ferry:obj:*") == []  # the chunks written before Redis filled up are gone too


def test_a_job_whose_object_does_not_fit_shared_memory_answers_200_with_the_error(
    api: httpx.Client, start_node, env: dict[str, str]
) -> None:
    start_node(processes=1, env={**env, "FERRY_SHM_BUDGET_BYTES": "4096"})
    ref = api.post("/v1/objects", content=npy_bytes(np.zeros(1024, dtype=np.float64)), headers=NPY).json()  # 8 KiB
    job = api.post("/v1/jobs", json={"task": "array.stats", "args": {"data": ref}, "retries": 0}).json()

    answer = api.get(f"/v1/jobs/{job['id']}/result", params={"wait_s": 10})

    assert answer.status_code == 200
    result = answer.json()
    assert (result["ready"], result["status"]) == (True, "failed")
    assert "FERRY_SHM_BUDGET_BYTES" in result["error"] and "8192" in result["error"]


def test_a_reference_with_an_unparsable_dtype_or_too_many_dimensions_is_422_not_500(
        api: httpx.Client, client: Client) -> None:
    ref = client.put(np.ones(4)).model_dump(mode="json")
    bad_dtype = api.post("/v1/jobs", json={"task": "array.stats", "args": {"data": dict(ref, dtype=",")}})
    assert bad_dtype.status_code == 422 and "unknown dtype ','" in bad_dtype.text
    too_deep = api.post("/v1/objects?dtype=uint8&shape=" + ",".join(["1"] * 65), content=b"x", headers=RAW)
    assert too_deep.status_code == 422 and "65 dimensions" in too_deep.text


def test_a_reference_that_differs_from_the_stored_object_or_names_a_missing_one_is_422(
        api: httpx.Client, client: Client) -> None:
    ref = client.put(np.arange(1000, dtype=np.float64)).model_dump(mode="json")
    lying = dict(ref, dtype="<f4", nbytes=4000)
    as_float32 = api.post("/v1/jobs", json={"task": "array.stats", "args": {"data": lying}})
    assert as_float32.status_code == 422
    assert f"object {ref['id']} holds 8000 bytes but the reference says 4000 bytes" in as_float32.text
    missing = api.post("/v1/jobs", json={"task": "array.stats", "args": {"data": dict(ref, id="0" * 32)}})
    assert missing.status_code == 422 and f"object {'0' * 32} does not exist" in missing.text


def test_deleting_an_object_a_queued_job_needs_is_409_unless_forced(api: httpx.Client, client: Client) -> None:
    ref = client.put(np.arange(10.0))
    job = client.submit("array.stats", {"data": ref}, queue="nobody-listens", allow_unserved=True).id
    refused = api.delete(f"/v1/objects/{ref.id}")
    assert refused.status_code == 409 and job in refused.text and "force" in refused.text
    assert api.delete(f"/v1/objects/{ref.id}?force=true").status_code == 204
    assert api.get(f"/v1/objects/{ref.id}").status_code == 404
