"""What jobs cost the broker: Redis commands and Redis CPU, per job.

Redis runs commands on one core, so the jobs/s a whole deployment can carry, however
many workers it has, is capped by what one job costs that core. ``BrokerMeter`` reads
it from Redis itself: it resets ``INFO commandstats`` (``CONFIG RESETSTAT``) when a
window opens and reads it when the window closes, with the server's CPU time (``INFO
cpu``: ``used_cpu_sys`` + ``used_cpu_user``, which counts the commands and everything
around them: the event loop, replies, pub/sub fan-out) read at both ends. Commands run
by Lua scripts are counted one by one, as Redis counts them, next to the ``EVALSHA``
that ran them. The meter's own ``INFO`` and ``CONFIG`` calls are left out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The meter's own commands, left out of the counts.
OWN_COMMANDS = frozenset({"info", "config|resetstat", "config"})


@dataclass(frozen=True)
class BrokerCost:
    """Commands (by name, lower case) and Redis CPU seconds over one window (``sys_s``
    of them in the kernel, for the server: its socket reads and writes, its wake-ups)."""

    calls: dict[str, int]
    cpu_s: float
    sys_s: float = 0.0

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    def per_job(self, jobs: int) -> dict[str, Any]:
        """The window's cost divided among ``jobs``: commands per job (in all and by
        command, most first), Redis CPU microseconds per job (and the kernel's part of
        them), and the jobs/s one Redis core could carry at that cost."""
        jobs = max(jobs, 1)
        cpu_us = 1e6 * self.cpu_s / jobs
        return {
            "jobs": jobs,
            "commands_per_job": self.commands / jobs,
            "by_command": {
                name: calls / jobs
                for name, calls in sorted(self.calls.items(), key=lambda kv: (-kv[1], kv[0]))
            },
            "cpu_us_per_job": cpu_us,
            "cpu_sys_us_per_job": 1e6 * self.sys_s / jobs,
            "jobs_per_s_per_core": 1e6 / cpu_us if cpu_us > 0 else None,
        }


def command_calls(client: Any) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls}, without the meter's own commands."""
    stats = client.info("commandstats")
    calls = {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_").lower()
        if name not in OWN_COMMANDS and isinstance(value, dict):
            calls[name] = int(value.get("calls", 0))
    return calls


def server_cpu(client: Any) -> tuple[float, float]:
    """The Redis server's CPU seconds so far (its main thread and the rest of it), and
    the system (kernel) part of them."""
    cpu = client.info("cpu")
    sys_s = float(cpu["used_cpu_sys"])
    return sys_s + float(cpu["used_cpu_user"]), sys_s


class BrokerMeter:
    """Measures one window at a time on one Redis server (all of its databases: run it
    on a Redis that serves only what is measured)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._cpu_start: tuple[float, float] | None = None

    def start(self) -> None:
        """Open a window: the command counts start from zero."""
        self.client.config_resetstat()
        self._cpu_start = server_cpu(self.client)

    def stop(self) -> BrokerCost:
        """Close the window: what it cost since ``start``."""
        if self._cpu_start is None:
            raise RuntimeError("BrokerMeter.stop() before start()")
        calls = command_calls(self.client)
        (cpu_s, sys_s), (cpu_start, sys_start) = server_cpu(self.client), self._cpu_start
        cost = BrokerCost(calls, cpu_s - cpu_start, sys_s - sys_start)
        self._cpu_start = None
        return cost


def format_by_command(by_command: dict[str, float], top: int = 8) -> str:
    """``set 2.0, publish 1.0, ...``: the commands that cost a job most, first."""
    shown = [
        f"{name} {per_job:.2f}"
        for name, per_job in list(by_command.items())[:top]
        if per_job >= 0.005
    ]
    rest = len(by_command) - top
    return ", ".join(shown) + (f", +{rest} more" if rest > 0 else "")


def measure_batch(
    jobs: int = 6000,
    encoding: str = "uint8",
    rounds: int = 3,
    log_dir: Any = None,
    redis_core: int | None = None,
) -> list[dict[str, Any]]:
    """The issue-style measurement: one ``aimass worker --devices cpu`` on the digits
    stand-in and a Redis of its own; ``jobs`` one-image jobs through
    ``Client.submit_many`` and then ``Client.wait``, metered from before the submit to
    the last result, ``rounds`` times. ``encoding``: ``uint8`` pixels or ``png``.
    ``redis_core``: Redis runs on that core alone, and this process and the worker on
    the others, as a deployment's Redis has a core of its own."""
    import tempfile

    from aimass.bench.processes import digits_worker
    from aimass.embedded_redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="aimass-broker-") as tmp:
        root = Path(tmp)
        out = []
        with (
            RedisServer(root / "redis") as server,
            own_core(server, redis_core),
            digits_worker(server.url, root, encoding, log_dir and Path(log_dir)) as run,
        ):
            meter = BrokerMeter(run.client.redis)
            for _ in range(rounds):
                submissions = run.make(jobs)
                meter.start()
                run.answer(submissions, timeout_s=600)
                out.append(meter.stop().per_job(jobs))
    return out


@contextlib.contextmanager
def own_core(server: Any, core: int | None) -> Iterator[None]:
    """Pin every thread of ``server``'s redis-server to ``core`` and this process (with
    the processes it starts meanwhile) to the other cores it may use; put this process
    back as it was after. Nothing when ``core`` is None."""
    if core is None:
        yield
        return
    mine = os.sched_getaffinity(0)
    if core not in mine or len(mine) < 2:
        raise ValueError(
            f"--redis-core {core}: expected one of this process's cores {sorted(mine)}, "
            "with at least one left for the worker"
        )
    for thread in Path(f"/proc/{server.process.pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), {core})
    os.sched_setaffinity(0, mine - {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


def count_run_instructions(encoding: str = "png", jobs: int = 3000) -> dict[str, float]:
    """The instructions (``instructions``) and commands (``commands``) Redis runs per job
    in a real bulk run, and the instructions that are the same in any run (``fixed``).
    One ``aimass worker --devices cpu`` on the digits stand-in answers one-image jobs
    (``uint8`` pixels or ``png``) sent through ``Client.submit_many`` and waited for with
    ``Client.wait``, on a redis-server under callgrind (aimass/bench/instructions.py).
    Everything the run sends Redis is in it: the producer's result subscriptions, the
    worker's run counts, its batches' real sizes. A run of ``jobs`` and one of a third as
    many are counted, each a server's whole life; their difference per job of the
    difference is what a job adds (the start, the connections and the idle polls, the
    same in both, cancel out). Repeated counts agree within about 1.5 % (the batches'
    sizes vary a little from run to run)."""
    from aimass.bench.instructions import need_valgrind

    need_valgrind()
    small = jobs // 3
    if small < 1:
        raise ValueError(f"count at least 3 jobs, got {jobs}")
    (few, few_calls), (many, many_calls) = (_count_run(encoding, n) for n in (small, jobs))
    extra = jobs - small
    per_job = (many - few) / extra
    return {
        "instructions": per_job,
        "commands": (sum(many_calls.values()) - sum(few_calls.values())) / extra,
        "fixed": many - jobs * per_job,  # in any run: the start, connections, idle polls
    }


def _count_run(encoding: str, jobs: int) -> tuple[int, dict[str, int]]:
    """A redis-server's instructions in its whole life, and its commands by name, while
    one worker answers ``jobs`` jobs sent in bulk."""
    import tempfile

    from aimass.bench.instructions import counted_server, total
    from aimass.bench.processes import digits_worker

    with tempfile.TemporaryDirectory(prefix="aimass-run-instructions-") as tmp:
        root = Path(tmp)
        server, profile = counted_server(root)
        server.start(timeout=120)
        try:
            with digits_worker(server.url, root, encoding) as run:
                run.answer(run.make(jobs), timeout_s=900)
                calls = command_calls(run.client.redis)
        finally:
            server.stop(timeout=60)  # callgrind writes the profile as the server exits
        return total(profile), calls


def replay(
    jobs: int = 6000, rounds: int = 3, in_flight: int = 64, settle_size: int = 32
) -> list[dict[str, Any]]:
    """The bulk run's Redis traffic from this process alone, with no worker process
    competing with Redis for the cores: ``jobs`` one-image uint8 jobs submitted with
    ``Client.submit_many`` while a result watcher waits on each, taken by the worker's
    take script up to ``in_flight`` at a time and settled ``settle_size`` at a time,
    ``rounds`` times on a Redis of its own. What the scripts cost Redis, apart from
    what a busy machine adds to it."""
    import tempfile

    import numpy as np

    from aimass.bench.load import one_image_jobs
    from aimass.embedded_redis import RedisServer
    from aimass.producer.client import Client
    from aimass.producer.watcher import ResultWatcher
    from aimass.worker.redis_queue import ModelQueues

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    out = []
    with (
        tempfile.TemporaryDirectory(prefix="aimass-replay-") as tmp,
        RedisServer(Path(tmp)) as server,
        Client(server.url) as client,
    ):
        queues = ModelQueues(client.redis, ["digits"], "replay", 3600)
        meter = BrokerMeter(client.redis)
        for _ in range(rounds):
            submissions = one_image_jobs([pixels], jobs)
            with ResultWatcher(client.redis) as watcher:
                meter.start()
                watcher.watch(job.id for job in client.submit_many(submissions))
                _work_as_a_worker(queues, watcher, in_flight, settle_size)
                out.append(meter.stop().per_job(jobs))
    return out


def _work_as_a_worker(queues: Any, watcher: Any, in_flight: int, settle_size: int) -> None:
    """Take and settle every job the watcher waits on, as a worker would, each with a
    classify result of one image."""
    from aimass.bench.instructions import answered

    held: list[Any] = []
    while watcher.pending:
        held += queues.take(in_flight - len(held))
        settling, held = held[:settle_size], held[settle_size:]
        queues.settle([answered(taken) for taken in settling])
        while watcher.next_finished(0 if held else 5) is not None:
            pass


def main(argv: list[str] | None = None) -> int:
    import argparse
    import statistics

    parser = argparse.ArgumentParser(
        prog="python -m aimass.bench.broker",
        description="Redis commands and Redis CPU per job, jobs sent in bulk and waited "
        "for (docs/performance.md, sizing the broker).",
    )
    parser.add_argument("--jobs", type=int, help="6000; with --instructions --worker, 3000")
    parser.add_argument("--encoding", choices=("uint8", "png"), default="uint8")
    parser.add_argument("--rounds", type=int, help="3; with --instructions, 30")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="no worker: replay a worker's takes and settles from this process (uint8)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions Redis runs per job instead (aimass/bench/instructions.py)",
    )
    parser.add_argument("--jobs-per-call", type=int, default=32, help="with --instructions")
    parser.add_argument(
        "--redis-core",
        type=int,
        help="run Redis on this core alone and the worker on the others (Linux; bulk runs)",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="with --instructions: count a real bulk run through a worker instead, --jobs "
        "jobs (default 3000) against a third as many",
    )
    args = parser.parse_args(argv)
    if args.instructions and args.worker:
        jobs = args.jobs or 3000
        run = count_run_instructions(args.encoding, jobs)
        print(
            f"{args.encoding}, a bulk run through a worker ({jobs} jobs against {jobs // 3}): "
            f"instructions Redis runs per job {run['instructions']:,.0f}, commands per job "
            f"{run['commands']:.2f}; in any run, {run['fixed'] / 1e6:,.0f} million (the "
            "server's start, connections, idle polls)"
        )
        return 0
    if args.instructions:
        from aimass.bench.instructions import count_instructions

        counts = count_instructions(args.encoding, args.jobs_per_call, args.rounds or 30)
        print(
            f"{args.encoding}, calls of {args.jobs_per_call} jobs: instructions Redis runs "
            "per job: " + ", ".join(f"{part} {value:,.0f}" for part, value in counts.items())
        )
        return 0
    if args.replay:
        rounds = replay(args.jobs or 6000, args.rounds or 3)
    else:
        rounds = measure_batch(
            args.jobs or 6000, args.encoding, args.rounds or 3, redis_core=args.redis_core
        )
    for index, figures in enumerate(rounds, 1):
        print(
            f"round {index}: {figures['commands_per_job']:.2f} commands/job "
            f"({format_by_command(figures['by_command'], 20)}); "
            f"{figures['cpu_us_per_job']:.1f} us Redis CPU/job "
            f"({figures['cpu_sys_us_per_job']:.1f} of it in the kernel)"
        )
    cpu = statistics.median(r["cpu_us_per_job"] for r in rounds)
    kernel = statistics.median(r["cpu_sys_us_per_job"] for r in rounds)
    print(
        f"median: {statistics.median(r['commands_per_job'] for r in rounds):.2f} commands/job, "
        f"{cpu:.1f} us Redis CPU/job ({kernel:.1f} in the kernel), "
        f"~{1e6 / cpu:,.0f} jobs/s per Redis core"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
