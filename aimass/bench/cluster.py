"""What jobs cost each primary of a Redis Cluster: ``python -m aimass.bench.cluster
--primaries 3`` starts a local cluster of that many primaries (and a replica each, as a
deployment would run it), replays a worker's takes and settles from this process
(``broker.replay``'s traffic, sharded; with ``--worker`` a real ``aimass worker`` answers
them), and reports per primary its share of the jobs
(the results it stores), its commands and its Redis CPU per job. With the same figures
for one primary, it says how a cluster scales: each of 3 primaries carries a third of
the jobs, at the cost per job of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimass.bench.broker import BrokerCost, BrokerMeter, format_by_command
from aimass.protocol.keys import RESULT_KEY_PREFIX


@dataclass(frozen=True)
class PrimaryLoad:
    """One primary's part of one window."""

    address: str
    jobs: int  # results it stores: the jobs of its shards
    cost: BrokerCost
    used_memory: int  # bytes, at the window's end

    def describe(self, total_jobs: int) -> dict[str, Any]:
        """Its share of the jobs, and its cost per job of its own (``BrokerCost.per_job``)."""
        return {
            **self.cost.per_job(self.jobs),
            "primary": self.address,
            "jobs": self.jobs,
            "share": self.jobs / max(total_jobs, 1),
            "used_memory": self.used_memory,
        }


class ClusterMeter:
    """A ``BrokerMeter`` on each primary of a cluster."""

    def __init__(self, cluster_client: Any) -> None:
        import redis

        self.nodes = {
            f"{node.host}:{node.port}": redis.Redis(host=node.host, port=node.port)
            for node in cluster_client.get_primaries()
        }
        self.meters = {address: BrokerMeter(client) for address, client in self.nodes.items()}

    def forget_results(self) -> None:
        """Delete the stored results (one key a command: they lie in several slots)."""
        for client in self.nodes.values():
            pipe = client.pipeline(transaction=False)
            for key in client.scan_iter(match=f"{RESULT_KEY_PREFIX}*", count=1000):
                pipe.delete(key)
            pipe.execute()

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()

    def stop(self) -> list[PrimaryLoad]:
        loads = []
        for address, meter in self.meters.items():
            cost = meter.stop()
            client = self.nodes[address]
            jobs = sum(1 for _ in client.scan_iter(match=f"{RESULT_KEY_PREFIX}*", count=1000))
            memory = int(client.info("memory")["used_memory"])
            loads.append(PrimaryLoad(address, jobs, cost, memory))
        return loads


def replay_on_cluster(
    primaries: int = 3,
    jobs: int = 6000,
    rounds: int = 3,
    in_flight: int = 64,
    settle_size: int = 32,
) -> list[list[dict[str, Any]]]:
    """``broker.replay`` on a local cluster of ``primaries``: per round, each primary's
    load (``PrimaryLoad.describe``). Each round starts from an empty cluster."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from aimass.bench.broker import _work_as_a_worker
    from aimass.bench.load import one_image_jobs
    from aimass.embedded_cluster import RedisCluster
    from aimass.producer.client import Client
    from aimass.producer.watcher import ResultWatcher
    from aimass.protocol.shards import keyspace
    from aimass.worker.redis_queue import ModelQueues

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    out = []
    with (
        tempfile.TemporaryDirectory(prefix="aimass-cluster-") as tmp,
        RedisCluster(Path(tmp), primaries, replicas=1 if primaries >= 3 else 0) as cluster,
        Client(cluster.url) as client,
    ):
        space = keyspace(client.redis)
        queues = ModelQueues(client.redis, ["digits"], "replay", 3600, space=space)
        meter = ClusterMeter(client.redis)
        for _ in range(rounds):
            meter.forget_results()
            batch = one_image_jobs([pixels], jobs)
            with ResultWatcher(client.redis) as watcher:
                meter.start()
                watcher.watch(job.id for job in client.submit_many(batch))
                _work_as_a_worker(queues, watcher, in_flight, settle_size)
                loads = meter.stop()
            out.append([load.describe(jobs) for load in loads])
    return out


def worker_on_cluster(
    primaries: int = 3, jobs: int = 6000, rounds: int = 3, log_dir: Any = None
) -> list[list[dict[str, Any]]]:
    """The bulk run of ``broker.measure_batch`` on a local cluster of ``primaries``: one
    real ``aimass worker --devices cpu`` on the digits stand-in, ``jobs`` one-image
    uint8 jobs through ``Client.submit_many`` and then ``Client.wait``, metered on each
    primary; per round, each primary's load (``PrimaryLoad.describe``)."""
    import tempfile
    from pathlib import Path

    from aimass.bench.processes import digits_worker
    from aimass.embedded_cluster import RedisCluster

    out = []
    with tempfile.TemporaryDirectory(prefix="aimass-cluster-") as tmp:
        root = Path(tmp)
        with (
            RedisCluster(
                root / "cluster", primaries, replicas=1 if primaries >= 3 else 0
            ) as cluster,
            digits_worker(cluster.url, root, "uint8", log_dir and Path(log_dir)) as run,
        ):
            meter = ClusterMeter(run.client.redis)
            for _ in range(rounds):
                meter.forget_results()
                batch = run.make(jobs)
                meter.start()
                run.answer(batch, timeout_s=600)
                out.append([load.describe(jobs) for load in meter.stop()])
    return out


def memory_per_queued_job(primaries: int = 3, jobs: int = 20000) -> float:
    """Bytes of Redis memory per queued one-image uint8 job (its message and its
    submission marker), over all primaries: jobs submitted, none taken."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from aimass.bench.load import one_image_jobs
    from aimass.embedded_cluster import RedisCluster
    from aimass.producer.client import Client

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    with (
        tempfile.TemporaryDirectory(prefix="aimass-cluster-") as tmp,
        RedisCluster(Path(tmp), primaries, replicas=0) as cluster,
        Client(cluster.url, max_queue_depth=0) as client,
    ):
        meter = ClusterMeter(client.redis)
        before = sum(int(n.info("memory")["used_memory"]) for n in meter.nodes.values())
        client.submit_many(one_image_jobs([pixels], jobs))
        after = sum(int(n.info("memory")["used_memory"]) for n in meter.nodes.values())
    return (after - before) / jobs


def report(rounds: list[list[dict[str, Any]]]) -> list[str]:
    """Lines: per round, per primary, its share of the jobs and its cost per job."""
    lines = []
    for index, loads in enumerate(rounds, 1):
        for load in loads:
            lines.append(
                f"round {index} primary {load['primary']}: {load['jobs']} jobs "
                f"({100 * load['share']:.1f} %), {load['commands_per_job']:.2f} commands/job, "
                f"{load['cpu_us_per_job']:.1f} us Redis CPU/job "
                f"({format_by_command(load['by_command'])})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m aimass.bench.cluster",
        description="Each primary's share of the jobs, commands and Redis CPU per job, on a "
        "local Redis Cluster (docs/performance.md, sizing a cluster).",
    )
    parser.add_argument("--primaries", type=int, default=3, help="1, or 3 and more")
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--memory", action="store_true", help="also the Redis memory per queued job"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="a real aimass worker answers the jobs (default: this process replays a "
        "worker's takes and settles)",
    )
    args = parser.parse_args(argv)
    run = worker_on_cluster if args.worker else replay_on_cluster
    print("\n".join(report(run(args.primaries, args.jobs, args.rounds))))
    if args.memory:
        per_job = memory_per_queued_job(args.primaries)
        print(f"memory per queued job: {per_job:,.0f} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
