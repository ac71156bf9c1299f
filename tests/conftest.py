"""Test harness: a private Redis server per session, tiny models, real worker processes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from aimass.embedded_cluster import RedisCluster
from aimass.embedded_redis import RedisServer
from aimass.protocol.settings import TEST_RUN_VARIABLES
from tests.support.clusters import need_cluster_redis
from tests.support.processes import WorkerProcess
from tests.support.tiny_models import build_repository


def pytest_configure(config: pytest.Config) -> None:
    """Start from no AIMASS_* variable but those that ask for a kind of run (the cluster
    tests required, more fuzz examples, a longer soak): a developer's own settings would
    otherwise reach the settings the tests read and, through the launcher, every worker
    they start."""
    for name in [name for name in os.environ if name.startswith("AIMASS_")]:
        if name not in TEST_RUN_VARIABLES:
            del os.environ[name]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port, for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


_databases = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A fresh, empty Redis database for one test (databases 1-15, reused in turn)."""
    db = next(_databases) % 15 + 1
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` and ``tiny-gan``, built with onnx.helper; read-only for tests."""
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def shared_worker(
    redis_server: RedisServer, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker serving the tiny models on database 0, shared by tests that only
    submit jobs and read results."""
    log = tmp_path_factory.mktemp("logs") / "shared-worker.log"
    worker = WorkerProcess(redis_server.url, model_repository, log).start()
    yield worker
    worker.stop()


@pytest.fixture
def shared_url(shared_worker: WorkerProcess) -> str:
    return shared_worker.redis_url


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers of a test's own (stopped at the end of the test)."""
    started: list[WorkerProcess] = []

    def start(
        redis_url: str, repository: Path, *args: str, ready_timeout: float = 60.0, **env: str
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(redis_url, repository, log, list(args), env)
        started.append(worker)
        return worker.start(ready_timeout)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of our own (3 primaries, 3 replicas on free ports), for the whole
    session; only the tests that ask for it start it (see need_cluster_redis)."""
    need_cluster_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The session's cluster, emptied for one test (a cluster has one database)."""
    for port in redis_cluster.primary_ports():
        with redis.Redis(port=port) as client:
            client.flushall()
    return redis_cluster.url
