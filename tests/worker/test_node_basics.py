from shared.client import Client
from tests.support import NodeProcess


def test_a_submitted_job_runs_on_a_node_and_its_result_comes_back(client: Client, start_node) -> None:
    start_node(processes=1)
    job = client.submit("echo", {"value": {"hello": [1, 2, 3]}})
    result = client.result(job, wait_s=10)
    assert result.ready and result.status == "finished"
    assert result.value == {"hello": [1, 2, 3]}
