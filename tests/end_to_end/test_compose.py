"""docker-compose.yml: valid under the Compose Specification, meets Ferry's deployment requirements, and
its services' own commands and healthchecks work, run as local processes (no Docker engine needed).

The schema, compose_spec.json next to this file, is compose/config/compose_spec.json from the
docker-compose 1.29.2 wheel on PyPI (Copyright Docker, Inc., Apache License 2.0), unchanged but for a
`$comment` that says so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import redis
import yaml

from shared import keys
from shared.embedded import find_server_binary, free_port
from shared.settings import Settings
from tests.support import REPO, wait_for

COMPOSE_FILE = REPO / "docker-compose.yml"
TOKEN = "compose-test-token"  # what an operator exports before `docker compose up` (compose refuses to start without)
SCHEMA_FILE = Path(__file__).with_name("compose_spec.json")
START_TIMEOUT_S = 30.0

# --- reading the compose file as `docker compose` does -------------------------------------------

# `$$` (a literal `$`), `${...}`, or `$NAME`; compose interpolates every string value, never keys.
_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.DOTALL)


def interpolate(text: str, host_env: Mapping[str, str]) -> str:
    """Resolve `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`."""

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return host_env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation ${{{match['braced']}}} in {text!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = host_env.get(name)
        if op is None:
            return value or ""
        missing = not value if op.startswith(":") else value is None
        if op.endswith("?") and missing:
            raise ValueError(f"{name} is required: {arg}")
        return arg if missing else value  # type: ignore[return-value]

    return _REFERENCE.sub(resolve, text)


def interpolated(node: Any, host_env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, host_env)
    if isinstance(node, list):
        return [interpolated(item, host_env) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, host_env) for key, value in node.items()}
    return node


def load_compose(host_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file after YAML anchors and merge keys, and interpolation from `host_env` (default: nothing set)."""
    return interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), host_env or {})


def argv(command: str | list[str]) -> list[str]:
    """A service's `command` (or a CMD healthcheck) as argv; compose splits a string as a shell would, with no shell."""
    return shlex.split(command) if isinstance(command, str) else list(command)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: str) -> float:
    """A compose (Go) duration such as `5m30s` in seconds."""
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts)


def size_bytes(value: str | int) -> int:
    """A compose byte size such as `2gb` in bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", value.strip().lower())
    if match is None:
        raise ValueError(f"not a byte size: {value!r}")
    return int(match[1]) * 1024 ** " kmg".index(match[2] or " ")


def _check_duration(value: object) -> bool:
    if isinstance(value, str):
        duration_s(value)  # raises ValueError, which the checker reports
    return True


_PORTS = re.compile(r"(?:(?:[\d.]+|\[[0-9A-Fa-f:]+\]):)?(?:\d+(?:-\d+)?:)?\d+(?:-\d+)?(?:/(?:tcp|udp|sctp))?")


def _check_ports(value: object) -> bool:
    return not isinstance(value, (str, int)) or bool(_PORTS.fullmatch(str(value)))


# Formats as compose means them: `duration` is Go's (`5m30s`, not ISO 8601), `ports` is docker's port syntax.
FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("duration", raises=ValueError)(_check_duration)
FORMATS.checks("ports")(_check_ports)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose({"FERRY_API_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# --- (a) the file itself -------------------------------------------------------------------------


def test_compose_file_is_valid_under_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema, format_checker=FORMATS)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(compose)]
    assert problems == []
    assert "version" not in yaml.safe_load(COMPOSE_FILE.read_text()), "the Compose Specification has no version key"
    assert set(compose["services"]) == {"redis", "producer", "worker"}


def test_schema_check_catches_a_misspelt_key_and_a_bad_duration(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA_FILE.read_text()), format_checker=FORMATS)
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["shm-size"] = "2gb"
    broken["services"]["worker"]["stop_grace_period"] = "5 minutes"
    messages = " | ".join(e.message for e in validator.iter_errors(broken))
    assert "shm-size" in messages and "5 minutes" in messages


def test_every_service_restarts_unless_stopped(services: dict[str, dict[str, Any]]) -> None:
    # `rq worker` can exit 0 after a Redis error: `on-failure` would leave it down.
    assert {name: s.get("restart") for name, s in services.items()} == dict.fromkeys(services, "unless-stopped")


def test_redis_persists_every_second_has_a_memory_limit_refuses_eviction_and_is_not_published(
    services: dict[str, dict[str, Any]],
) -> None:
    redis_service = services["redis"]
    assert redis_service["image"].startswith("redis:7")
    command = " ".join(argv(redis_service["command"]))
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory 1gb", "--maxmemory-policy noeviction"):
        assert setting in command
    bigger = load_compose({"FERRY_API_TOKEN": TOKEN, "FERRY_REDIS_MAXMEMORY": "8gb"})["services"]["redis"]
    assert "--maxmemory 8gb" in " ".join(argv(bigger["command"]))
    assert "ports" not in redis_service
    assert any(str(v).endswith(":/data") and not str(v).startswith(("/", ".")) for v in redis_service["volumes"]), \
        "Redis's /data must be a named volume"
    assert "redis-cli ping" in " ".join(argv(redis_service["healthcheck"]["test"]))


def test_producer_publishes_8000_on_loopback_only_after_redis_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    producer = services["producer"]
    assert argv(producer["command"])[:2] == ["ferry", "producer"]
    assert producer["ports"] == ["127.0.0.1:8000:8000"], "safe by default: published on the host's loopback only"
    exposed = load_compose({"FERRY_API_TOKEN": TOKEN, "FERRY_PUBLISH": "0.0.0.0:9000"})["services"]["producer"]
    assert exposed["ports"] == ["0.0.0.0:9000:8000"]
    assert producer["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "/healthz" in " ".join(argv(producer["healthcheck"]["test"]))


def test_compose_refuses_to_start_without_an_api_token_and_passes_it_only_to_the_api() -> None:
    for unset in ({}, {"FERRY_API_TOKEN": ""}):
        with pytest.raises(ValueError, match="FERRY_API_TOKEN is required: set FERRY_API_TOKEN"):
            load_compose(unset)
    with_token = load_compose({"FERRY_API_TOKEN": "s3cret"})
    assert with_token["services"]["producer"]["environment"]["FERRY_API_TOKEN"] == "s3cret"
    assert "FERRY_API_TOKEN" not in with_token["services"]["worker"]["environment"]


def test_redis_url_and_producer_processes_are_settable(services: dict[str, dict[str, Any]]) -> None:
    for name in ("producer", "worker"):
        assert services[name]["environment"]["FERRY_REDIS_URL"] == "redis://redis:6379/0"
    elsewhere = load_compose({"FERRY_API_TOKEN": TOKEN, "FERRY_REDIS_URL": "redis://cache.internal:6380/2",
                              "FERRY_API_WORKERS": "4"})["services"]
    assert {elsewhere[n]["environment"]["FERRY_REDIS_URL"] for n in ("producer", "worker")} == {"redis://cache.internal:6380/2"}
    workers = services["producer"]["environment"]["FERRY_API_WORKERS"]
    assert (workers, elsewhere["producer"]["environment"]["FERRY_API_WORKERS"]) == ("2", "4")
    # The variable is a setting the producer reads (`ferry producer --workers` defaults to it).
    assert Settings(_env_file=None, api_workers=workers).api_workers == 2
    assert Settings.model_fields["api_workers"].default == 1


def test_user_task_code_is_mounted_read_only_where_the_image_imports_it(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    [pythonpath] = re.findall(r"^ENV PYTHONPATH=(\S+)", dockerfile, re.MULTILINE)
    for name in ("producer", "worker"):
        [mount] = services[name]["volumes"]
        source, target, mode = mount.split(":")
        assert (source, target, mode) == ("./tasks", pythonpath, "ro"), mount
        assert services[name]["environment"]["FERRY_TASK_MODULES"] == ""
    mine = load_compose({"FERRY_API_TOKEN": TOKEN, "FERRY_TASKS_DIR": "/srv/mytasks", "FERRY_TASK_MODULES": "mytasks"})
    assert mine["services"]["worker"]["volumes"] == [f"/srv/mytasks:{pythonpath}:ro"]
    assert mine["services"]["worker"]["environment"]["FERRY_TASK_MODULES"] == "mytasks"
    assert (REPO / "tasks").is_dir(), "the default FERRY_TASKS_DIR ships with the repository"
    assert "tasks" in (REPO / ".dockerignore").read_text().split(), "task code comes through the mount, not the image"


def test_worker_replicas_are_scalable_nodes_with_their_own_shm_and_time_to_finish_jobs(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    assert argv(worker["command"]) == ["ferry", "worker", "--processes", "2"]
    eight = load_compose({"FERRY_API_TOKEN": TOKEN, "FERRY_PROCESSES": "8"})["services"]["worker"]
    assert argv(eight["command"])[-1] == "8"
    # --scale worker=N: nothing that two replicas could not share.
    for key in ("container_name", "hostname", "ports", "ipc"):
        assert key not in worker, key
    assert "FERRY_NODE_ID" not in worker["environment"], "each replica's node id must default to its hostname"
    assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert size_bytes(worker["shm_size"]) >= 1024**3
    assert duration_s(worker["stop_grace_period"]) > Settings.model_fields["job_timeout_s"].default
    assert "ferry health --node" in " ".join(argv(worker["healthcheck"]["test"]))


def test_producer_and_worker_share_one_image_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    producer, worker = services["producer"], services["worker"]
    assert producer["image"] == worker["image"] and producer["build"] == worker["build"] == "."
    dockerfile = (REPO / producer["build"] / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE) == ["python:3.11-slim"]
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert "PYTHONUNBUFFERED=1" in dockerfile


# --- (b) the services' own commands, run here ----------------------------------------------------


class Service:
    """A compose service's command as a local process in its own session; `stop()` ends the whole group."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=dict(env), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
        return True

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, as `docker stop` sends; SIGKILL to whatever is left in the group."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


@pytest.fixture()
def run_service(tmp_path: Path) -> Iterator[Callable[[str, list[str], Mapping[str, str]], Service]]:
    started: list[Service] = []

    def run(name: str, command: list[str], env: Mapping[str, str]) -> Service:
        started.append(Service(name, command, env, tmp_path))
        return started[-1]

    yield run
    for service in reversed(started):
        service.stop()


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """`command` with `option`'s value replaced; the option must be there (the test follows the compose file)."""
    option_value(command, option)
    index = command.index(option) + 1
    return [*command[:index], value, *command[index + 1:]]


def option_value(command: list[str], option: str) -> str:
    assert option in command, f"{option} is no longer in {command}"
    return command[command.index(option) + 1]


def local_env(service: dict[str, Any], test_env: Mapping[str, str]) -> dict[str, str]:
    """The service's compose environment under the test's settings (its Redis), as its container would see it.

    The test's FERRY_REDIS_URL and state win; compose's FERRY_TASK_MODULES wins when it names modules; the
    service's task mount is put on PYTHONPATH, as the image's `ENV PYTHONPATH=/app/tasks` does for the mounted
    directory in a container. `ferry` and `python` come from this interpreter.
    """
    compose_env = {key: str(value) for key, value in service.get("environment", {}).items()}
    env = {**compose_env, **test_env}
    if compose_env.get("FERRY_TASK_MODULES"):
        env["FERRY_TASK_MODULES"] = compose_env["FERRY_TASK_MODULES"]
    for mount in service.get("volumes", []):
        source, target = str(mount).split(":")[:2]
        if target == IMAGE_PYTHONPATH:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / source), env.get("PYTHONPATH", "")]))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    assert shutil.which("ferry", path=env["PATH"]), "the `ferry` console script is missing: pip install -e '.[test]'"
    return env


IMAGE_PYTHONPATH = "/app/tasks"  # the Dockerfile's ENV PYTHONPATH (checked by a test above)

USER_TASKS = """
from shared import task


@task("usercode.greet")
def greet(name: str) -> str:
    \"\"\"A user's own task, from a module that is neither in the image nor in Ferry.\"\"\"
    return f"hello {name}, from {__name__}"
"""


def run_healthcheck(service: dict[str, Any], env: Mapping[str, str], replace: Mapping[str, str] | None = None) -> int:
    """Run a service's healthcheck as docker does (`CMD` as argv, `CMD-SHELL` through /bin/sh -c); its exit code.

    `replace` rewrites parts of it (where it finds the server) and each part must be there to rewrite.
    """
    check = service["healthcheck"]
    kind, *args = argv(check["test"])
    assert kind in ("CMD", "CMD-SHELL"), kind
    for old, new in (replace or {}).items():
        assert any(old in arg for arg in args), f"{old!r} is no longer in the healthcheck {check['test']}"
        args = [arg.replace(old, new) for arg in args]
    if kind == "CMD" and args[0] == "python":
        args[0] = sys.executable  # the image's `python`; a Debian host may have only `python3`
    command = ["/bin/sh", "-c", *args] if kind == "CMD-SHELL" else args
    done = subprocess.run(command, env=dict(env), cwd=REPO, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=duration_s(check["timeout"]) * 3)  # *3: a busy test machine
    print(f"healthcheck {command} exited {done.returncode}:\n{done.stdout}{done.stderr}")  # shown if the test fails
    return done.returncode


def healthz_answers(producer: Service, port: int) -> bool | str:
    """True once /healthz answers 200; "exited" if the producer died (the port was taken, say)."""
    if producer.proc.poll() is not None:
        return "exited"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_producer(service: dict[str, Any], env: Mapping[str, str], run_service) -> tuple[Service, int]:
    """The producer's own command, on loopback and a free port instead of 0.0.0.0:8000; waits for /healthz."""
    for _attempt in range(3):  # a free port can be taken before the producer binds it
        port = free_port()
        command = with_option(with_option(argv(service["command"]), "--port", str(port)), "--host", "127.0.0.1")
        producer = run_service("producer", command, env)
        answered = wait_for(partial(healthz_answers, producer, port), START_TIMEOUT_S,
                            what="the producer to answer /healthz")
        if answered is True:
            return producer, port
    raise AssertionError(f"the producer did not start:\n{producer.output()}")


def test_producer_and_worker_commands_run_a_users_task_and_pass_their_healthchecks(
    env: dict[str, str], conn: redis.Redis, run_service, start_node, tmp_path: Path,
) -> None:
    # The operator's side: a directory with their task module, named in FERRY_TASKS_DIR and FERRY_TASK_MODULES.
    module = f"usertasks_{uuid.uuid4().hex[:8]}"
    tasks_dir = tmp_path / "mytasks"
    tasks_dir.mkdir()
    (tasks_dir / f"{module}.py").write_text(USER_TASKS)
    host_env = {"FERRY_API_TOKEN": TOKEN, "FERRY_TASKS_DIR": str(tasks_dir), "FERRY_TASK_MODULES": module}
    services = load_compose(host_env)["services"]
    producer_service, worker_service = services["producer"], services["worker"]
    producer_env = local_env(producer_service, env)
    producer, port = start_producer(producer_service, producer_env, run_service)
    at_port = {"127.0.0.1:8000": f"127.0.0.1:{port}"}

    # The worker's command as it stands. Compose sets no FERRY_NODE_ID; here the node gets an id of its
    # own, so that it cannot collide with anything else on this machine (the host name might).
    worker_env = local_env(worker_service, env)
    command = argv(worker_service["command"])
    processes = int(option_value(command, "--processes"))
    node = start_node(node_id=f"c{uuid.uuid4().hex[:8]}", processes=processes, command=command, env=worker_env)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        job = {"task": "usercode.greet", "args": {"name": "compose"}}
        assert http.post("/v1/jobs", json=job).status_code == 401, "the API needs the token by default"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        submitted = http.post("/v1/jobs", json=job, headers=auth)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        result = http.get(f"/v1/jobs/{job_id}/result", params={"wait_s": 10}, headers=auth)
    assert result.status_code == 200, result.text
    body = result.json()
    assert (body["id"], body["ready"], body["status"]) == (job_id, True, "finished"), body
    assert body["value"] == f"hello compose, from {module}"
    assert conn.hget(keys.job(job_id), "worker_name").decode().startswith(f"{node.node_id}."), "run by this node"

    # The healthchecks, as docker runs them inside each container.
    assert run_healthcheck(producer_service, producer_env, at_port) == 0
    assert run_healthcheck(worker_service, node.env) == 0
    # In a container FERRY_NODE_ID is unset and HOSTNAME is the container id, which is the node id.
    in_container = {k: v for k, v in node.env.items() if k != "FERRY_NODE_ID"} | {"HOSTNAME": node.node_id}
    assert run_healthcheck(worker_service, in_container) == 0
    another_node = in_container | {"HOSTNAME": f"c{uuid.uuid4().hex[:8]}"}
    assert run_healthcheck(worker_service, another_node) == 1
    node.terminate()
    assert run_healthcheck(worker_service, node.env) == 1  # a stopped node is unhealthy
    producer.stop()
    assert run_healthcheck(producer_service, producer_env, at_port) != 0


def test_redis_command_runs_a_server_with_aof_a_memory_limit_and_noeviction_that_passes_its_healthcheck(
    services: dict[str, dict[str, Any]], tmp_path: Path, run_service,
) -> None:
    redis_service = services["redis"]
    command = argv(redis_service["command"])
    assert command[0] == "redis-server"
    port = free_port()
    # The tests' server binary (redis-server, else the bundled Valkey), kept private: loopback, a free port, a temp dir.
    command = [str(find_server_binary()), *command[1:],
               "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    server = run_service("redis", command, {"PATH": os.environ.get("PATH", "")})
    client = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
    try:
        def answers() -> bool:
            server.running()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, START_TIMEOUT_S, what="the compose Redis command to answer")
        config = client.config_get("*")
    finally:
        client.close()
    persistence = (config["appendonly"], config["appendfsync"], config["maxmemory-policy"])
    assert persistence == ("yes", "everysec", "noeviction")
    assert int(config["maxmemory"]) == 1024**3, "a memory limit: noeviction then refuses writes at a known size"

    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli on PATH to run the healthcheck with (it comes with the redis-server package)")
    on_port = {"redis-cli": f"redis-cli -p {port}"}
    assert run_healthcheck(redis_service, {"PATH": os.environ.get("PATH", "")}, on_port) == 0
    server.stop()
    assert run_healthcheck(redis_service, {"PATH": os.environ.get("PATH", "")}, on_port) != 0
