"""What the broker's scripts cost Redis, counted in instructions.

Redis CPU time per job moves by 10-20 % from one run to the next on a shared machine,
so a change worth a few percent cannot be told from the noise by timing it. The number
of instructions redis-server runs for the same commands on the same data hardly moves:
this runs redis-servers of its own under Valgrind's callgrind (which counts every
instruction it runs, about fifty times slower than Redis runs alone) and sends them the
bulk path's traffic: ``Client.submit_many`` of one-image jobs, the worker's take script,
then its settle of them, round after round. Each server's whole life is counted (turning
counting on and off around a part, from outside, loses some of it on a busy machine):
one server only enqueues, one enqueues and takes, one does all three, and one does
none, each emptying its database after each round; the differences between them are
what each part costs. User-space instructions only: the kernel's work for Redis (its
socket reads and writes) is not in them. Needs ``valgrind`` on PATH.

``aimass.bench.broker.count_run_instructions`` counts a real bulk run the same way, on a
server from ``counted_server``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aimass.embedded_redis import RedisServer
    from aimass.worker.redis_queue import Settlement, Taken

PARTS = ("enqueue", "take", "settle")


def count_instructions(
    encoding: str = "png", jobs_per_call: int = 32, rounds: int = 30
) -> dict[str, float]:
    """Instructions redis-server runs per job in each part of the bulk path, and their
    sum (``total``): ``rounds`` calls of ``jobs_per_call`` one-image jobs (``uint8``
    pixels or ``png``), each call's jobs enqueued, taken and settled in turn."""
    need_valgrind()
    lives = [_count(PARTS[:n], encoding, jobs_per_call, rounds) for n in range(len(PARTS) + 1)]
    jobs = jobs_per_call * rounds
    counts = {part: (lives[n + 1] - lives[n]) / jobs for n, part in enumerate(PARTS)}
    counts["total"] = (lives[-1] - lives[0]) / jobs
    return counts


def need_valgrind() -> None:
    """Raises, saying how to get it, where valgrind is not on PATH."""
    if not shutil.which("valgrind"):
        raise RuntimeError(
            "counting instructions needs valgrind on PATH (Debian and Ubuntu: apt-get "
            "install valgrind)"
        )


def counted_server(root: Path) -> tuple[RedisServer, Path]:
    """A redis-server (not started) that runs under callgrind, and the profile it writes
    as it exits (``total`` reads it). hz 1: the server's timer work (ten times a second by
    default, whatever the traffic) weighs little in what is counted."""
    from aimass.embedded_redis import RedisServer

    profile = root / "callgrind.out"
    server = RedisServer(
        root / "redis",
        extra_args=["--hz", "1"],
        launcher=["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}"],
    )
    return server, profile


def _count(parts: tuple[str, ...], encoding: str, jobs_per_call: int, rounds: int) -> int:
    """Instructions a redis-server runs in its life while it serves ``rounds`` rounds
    of these parts of the bulk path, its database emptied after each."""
    from aimass.bench.load import bulk_images, one_image_jobs
    from aimass.producer.client import Client
    from aimass.producer.enqueue import ENQUEUE_SCRIPT
    from aimass.worker.queue_scripts import SETTLE, TAKE
    from aimass.worker.redis_queue import ModelQueues

    images = bulk_images(encoding, [32, 32, 1])
    with tempfile.TemporaryDirectory(prefix="aimass-instructions-") as tmp:
        server, profile = counted_server(Path(tmp))
        server.start(timeout=120)
        try:
            with Client(server.url) as client:
                for script in (ENQUEUE_SCRIPT, TAKE, SETTLE):  # compiled alike in all
                    client.redis.script_load(script)
                queues = ModelQueues(client.redis, ["digits"], "instructions", 3600)

                for _ in range(rounds):
                    submissions = one_image_jobs(images, jobs_per_call)
                    if "enqueue" in parts:
                        client.submit_many(submissions)
                    if "take" in parts:
                        taken = queues.take(jobs_per_call)
                        if len(taken) != jobs_per_call:
                            raise RuntimeError(f"took {len(taken)} of {jobs_per_call} jobs")
                    if "settle" in parts:
                        queues.settle([answered(t) for t in taken])
                    client.redis.flushdb()
        finally:
            server.stop(timeout=60)  # callgrind writes the profile as the server exits
        return total(profile)


def total(profile: Path) -> int:
    """The instructions a callgrind profile counted."""
    for line in profile.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction count in {profile}")


def answered(taken: Taken) -> Settlement:
    """The settlement a worker makes of a taken one-image classify job on digits: what
    the replays (here and in aimass/bench/broker.py) answer each job with."""
    from aimass.protocol.messages import TaskMessage
    from aimass.protocol.records import ResultRecord
    from aimass.worker.redis_queue import Settlement

    job_id = str(TaskMessage.decode(taken.raw).task_id)
    result = {"model": "digits", "version": 1, "predictions": [[{"label": "7", "score": 0.9}]]}
    return Settlement(taken.delivery_tag, job_id, ResultRecord.success(job_id, result))
