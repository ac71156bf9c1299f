"""What the broker's scripts cost Redis, counted in instructions.

Redis CPU time per job moves by 10-20 % from one run to the next on a shared machine,
so a change worth a few percent cannot be told from the noise by timing it. The number
of instructions redis-server runs for the same commands on the same data hardly moves:
this runs a redis-server of its own under Valgrind's callgrind (which counts every
instruction it runs, about fifty times slower than Redis runs alone), sends it the bulk
path's traffic (``Client.submit_many`` of one-image jobs, the worker's take script, then
its settle of them), and counts each of the three apart: a server for each part,
counting only while that part runs. User-space instructions only: the kernel's work for
Redis (its socket reads and writes) is not in them. Needs ``valgrind`` and
``callgrind_control`` on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PARTS = ("enqueue", "take", "settle")
RESULT = {"model": "digits", "version": 1, "predictions": [[{"label": "7", "score": 0.9}]]}


def count_instructions(
    encoding: str = "png", jobs_per_call: int = 32, rounds: int = 30
) -> dict[str, float]:
    """Instructions redis-server runs per job in each part of the bulk path, and their
    sum (``total``): ``rounds`` calls of ``jobs_per_call`` one-image jobs (``uint8``
    pixels or ``png``), each call's jobs enqueued, taken and settled in turn."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if not shutil.which(tool)]
    if missing:
        raise RuntimeError(
            f"counting instructions needs {' and '.join(missing)} on PATH "
            "(Debian and Ubuntu: apt-get install valgrind)"
        )
    counts = {part: _count(part, encoding, jobs_per_call, rounds) for part in PARTS}
    counts["total"] = sum(counts.values())
    return counts


def _count(part: str, encoding: str, jobs_per_call: int, rounds: int) -> float:
    """Instructions per job of one part, on a server of its own."""
    from aimass.bench.load import synthetic_pixels
    from aimass.embedded_redis import RedisServer
    from aimass.producer.client import Client
    from aimass.producer.submission import Submission
    from aimass.protocol.codecs import array_to_png
    from aimass.protocol.messages import TaskMessage
    from aimass.protocol.records import ResultRecord
    from aimass.worker.redis_queue import ModelQueues, Settlement

    pixels = synthetic_pixels([32, 32, 1], 32, seed=0)
    images: list[Any] = pixels if encoding == "uint8" else [array_to_png(p) for p in pixels]
    with tempfile.TemporaryDirectory(prefix="aimass-instructions-") as tmp:
        profile = Path(tmp) / "callgrind.out"
        launcher = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        # hz 1: the server's timer work (ten times a second by default, whatever the
        # traffic) seldom falls inside what is counted: runs agree to within about 2 %.
        server = RedisServer(
            Path(tmp),
            extra_args=["--hz", "1"],
            launcher=[*launcher, f"--callgrind-out-file={profile}"],
        ).start(timeout=120)
        try:
            assert server.process is not None
            switch = ["callgrind_control", "-i"]
            pid = str(server.process.pid)
            with Client(server.url) as client:
                queues = ModelQueues(client.redis, ["digits"], "instructions", 3600)

                def settled(taken: Any) -> Settlement:
                    job_id = str(TaskMessage.decode(taken.raw).task_id)
                    record = ResultRecord.success(job_id, RESULT)
                    return Settlement(taken.delivery_tag, job_id, record)

                for round_ in range(rounds + 1):  # the first loads the scripts, uncounted
                    submissions = [
                        Submission.classify(images[i % len(images)], model="digits")
                        for i in range(jobs_per_call)
                    ]
                    for name in PARTS:
                        counted = round_ > 0 and name == part
                        if counted:
                            subprocess.run([*switch, "on", pid], check=True, capture_output=True)
                        if name == "enqueue":
                            client.submit_many(submissions)
                        elif name == "take":
                            taken = queues.take(jobs_per_call)
                            if len(taken) != jobs_per_call:
                                raise RuntimeError(f"took {len(taken)} of {jobs_per_call} jobs")
                        else:
                            queues.settle([settled(t) for t in taken])
                        if counted:
                            subprocess.run([*switch, "off", pid], check=True, capture_output=True)
        finally:
            server.stop(timeout=60)  # callgrind writes the profile as the server exits
        return _total(profile) / (jobs_per_call * rounds)


def _total(profile: Path) -> int:
    """The instructions a callgrind profile counted."""
    for line in profile.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction count in {profile}")
