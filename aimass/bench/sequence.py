"""The sequence benchmark: tokens/s and time to first token of a sequence model, decoded
by aimass with per-step batching, by the same worker one job at a time
(``AIMASS_SEQUENCE_BATCHING=off``), and by ONNX Runtime running the same loop alone in
this process.

    python -m aimass.bench.sequence --repository models --model charlm

Starts its own Redis and workers (aimass/launcher.py), drives each level with a closed
loop of ``concurrency`` jobs in flight (``Client.run_many``), prints a table and the
goals, and writes JSON. Time to first token is the worker's own (``SequenceResult``:
from the job reaching the worker to its first token, which includes any wait for a
place in the decoding loop); raw ONNX Runtime's is from the job's start.

A level's first ``concurrency`` jobs arrive together at an idle worker: the ramp. Their
time to first token is that of a burst, not of ``concurrency`` in flight, so the level's
TTFT percentiles leave them out (``ttft_p50_ms_with_ramp`` keeps them). ONNX Runtime
alone runs in rounds between the rounds of aimass at 1 in flight, so that the ratio of
the two no longer compares figures taken minutes apart on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimass.bench.stats import percentile
from aimass.embedded_redis import RedisServer
from aimass.launcher import WorkerProcess

PROMPTS = ("def ", "import os\n", "class Queue:\n    ", "for i in range(", "return ", "# ")
MIN_JOBS = 240  # jobs per level at least: a level of one job in flight runs ~5 s
ROUNDS_AT_1 = 4  # rounds of ONNX Runtime alone and aimass at 1 in flight, alternating
BATCHED = "aimass (per-step batching)"
NAIVE = "aimass (one job at a time)"
RAW = "ONNX Runtime alone"


@dataclass
class Level:
    """One system at one concurrency: what it reached."""

    system: str
    concurrency: int
    jobs: int
    tokens: int
    seconds: float
    ttft_ms: list[float] = field(repr=False)  # in job order, the ramp first
    ramp: int = 0  # the first jobs, sent together to an idle system

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def joined(self, more: Level) -> Level:
        """This level and another round of it, as one."""
        return Level(
            self.system,
            self.concurrency,
            self.jobs + more.jobs,
            self.tokens + more.tokens,
            self.seconds + more.seconds,
            self.ttft_ms + more.ttft_ms[more.ramp :],
            self.ramp,
        )

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.ttft_ms[self.ramp :])
        return {
            "system": self.system,
            "concurrency": self.concurrency,
            "jobs": self.jobs,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "ttft_p50_ms": round(percentile(ordered, 50), 3),
            "ttft_p95_ms": round(percentile(ordered, 95), 3),
            "ttft_p50_ms_with_ramp": round(percentile(sorted(self.ttft_ms), 50), 3),
        }


@dataclass(frozen=True)
class Options:
    repository: Path
    model: str
    concurrency: list[int]
    max_tokens: int
    jobs_per_slot: int
    devices: str
    max_sequences: int
    intra_op_threads: int  # 0: the worker's own choice (the cores of its process)


def job_options(index: int, max_tokens: int) -> dict[str, Any]:
    """The ``index``-th job of a level: a prompt, sampled text, a seed of its own."""
    return {
        "prompt": PROMPTS[index % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "seed": index,
    }


def level_jobs(options: Options, concurrency: int) -> int:
    return max(MIN_JOBS, concurrency * options.jobs_per_slot)


def measure_worker(
    options: Options,
    redis_url: str,
    batching: bool,
    logs: Path,
    raw: Callable[[int, int], Level] | None = None,
) -> list[Level]:
    """Every level against one worker, batching or not; with ``raw``, the level at 1 in
    flight runs in rounds, each after a round of ``raw(jobs, first_index)``, and the
    joined raw level comes first in the list."""
    from aimass.producer.client import Client
    from aimass.producer.submission import Submission

    system = BATCHED if batching else NAIVE
    most = max(options.concurrency)
    env = {
        "AIMASS_SEQUENCE_BATCHING": "on" if batching else "off",
        "AIMASS_MAX_SEQUENCES": str(options.max_sequences),
        "AIMASS_CONCURRENCY": str(max(most, options.max_sequences)),
        "AIMASS_MODELS": options.model,
        "AIMASS_INTRA_OP_THREADS": str(options.intra_op_threads),
    }
    args = ["--repository", str(options.repository), "--devices", options.devices]
    worker = WorkerProcess(redis_url, args, logs / f"worker-{int(batching)}.log", env).start(120)
    levels: list[Level] = []
    try:
        with Client(redis_url) as client:
            warm = [
                Submission.sequence(model=options.model, **job_options(i, 16)) for i in range(8)
            ]
            client.run_many(warm, timeout=120)

            def measure(concurrency: int, count: int, first: int = 0) -> Level:
                jobs = [
                    Submission.sequence(model=options.model, **job_options(i, options.max_tokens))
                    for i in range(first, first + count)
                ]
                started = time.perf_counter()
                results = client.run_many(jobs, max_in_flight=concurrency, timeout=1800)
                return Level(
                    system,
                    concurrency,
                    len(results),
                    sum(r["tokens"] for r in results),
                    time.perf_counter() - started,
                    [r["time_to_first_token_ms"] for r in results],
                    ramp=concurrency,
                )

            for concurrency in options.concurrency:
                count = level_jobs(options, concurrency)
                if raw is not None and concurrency == 1:
                    share = -(-count // ROUNDS_AT_1)
                    rounds = [
                        (raw(share, k * share), measure(1, share, k * share))
                        for k in range(ROUNDS_AT_1)
                    ]
                    alone = functools.reduce(Level.joined, [r for r, _ in rounds])
                    level = functools.reduce(Level.joined, [w for _, w in rounds])
                    levels.insert(0, alone)
                    _say(alone)
                else:
                    level = measure(concurrency, count)
                levels.append(level)
                _say(level)
    finally:
        worker.stop()
    return levels


def raw_loop(options: Options) -> Callable[[int, int], Level]:
    """ONNX Runtime alone, one job after another, the same decoding loop: the prompt one
    token a step, then a token sampled (as the worker samples) and fed back each step.
    Returns a function of (jobs, index of the first): a round of them, as a level."""
    import numpy as np

    from aimass.protocol.contract import SequenceJob
    from aimass.protocol.manifest import MODEL_FILE
    from aimass.worker.kinds import Limits
    from aimass.worker.repository import ModelRepository
    from aimass.worker.sampling import sample_one
    from aimass.worker.sequences import SequenceModel
    from aimass.worker.sessions import DevicePlan, cpu_threads_per_process, create_session

    version = ModelRepository(options.repository).resolve(options.model)
    logic = SequenceModel(version.manifest)
    spec = logic.spec
    gpu = None if options.devices == "cpu" else int(options.devices.split(",")[0])
    threads = options.intra_op_threads or cpu_threads_per_process(1)  # as the worker picks
    plan = DevicePlan(gpu=gpu, intra_op_threads=threads)
    session = create_session(version.folder / MODEL_FILE, plan)
    names = [output.name for output in session.get_outputs()]
    logits_at = names.index(spec.logits_output)
    states_at = [names.index(state.output) for state in spec.state]
    limits = Limits(1 << 30, 1 << 30)
    end = -1 if spec.end_token is None else spec.end_token

    def run_round(jobs: int, first: int) -> Level:
        tokens, ttft = 0, []
        started = time.perf_counter()
        for index in range(first, first + jobs):
            job = SequenceJob(model=options.model, **job_options(index, options.max_tokens))
            _, _, decoding = logic.prepare(job, limits, None)
            prompt, sampler = decoding.prompt, decoding.sampler
            began = time.perf_counter()
            states = logic.zero_states(1)
            feed = np.array([prompt[0]], dtype=logic.token_dtype)
            written: list[int] = []
            step = 0
            while True:
                feeds = {spec.token_input: feed}
                feeds.update({s.input: a for s, a in zip(spec.state, states, strict=True)})
                outputs = session.run(None, feeds)
                states = [outputs[i] for i in states_at]
                step += 1
                if step < len(prompt):
                    feed[0] = prompt[step]
                    continue
                token = sample_one(outputs[logits_at][0], sampler)
                if not written:
                    ttft.append((time.perf_counter() - began) * 1000.0)
                written.append(token)
                if token == end or len(written) >= decoding.max_tokens:
                    break
                feed[0] = token
            tokens += len(written)
        return Level(RAW, 1, jobs, tokens, time.perf_counter() - started, ttft)

    run_round(8, 0)  # warm: the session's first runs are slower
    return run_round


def goals(levels: list[Level]) -> list[dict[str, Any]]:
    """The issue's goals, each with the figures it compares and PASS or MISS."""
    found = {(level.system, level.concurrency): level for level in levels}
    checks = []
    batched32, naive32 = found.get((BATCHED, 32)), found.get((NAIVE, 32))
    batched1, raw = found.get((BATCHED, 1)), found.get((RAW, 1))
    if batched32 and naive32:
        ratio = batched32.tokens_per_s / max(naive32.tokens_per_s, 1e-9)
        checks.append(_goal("tokens/s at 32: per-step batching / one at a time >= 5", ratio, 5.0))
    if batched32 and batched1:
        p50 = batched32.summary()["ttft_p50_ms"] / max(batched1.summary()["ttft_p50_ms"], 1e-9)
        checks.append(_goal("TTFT p50 at 32 / at 1 <= 3", p50, 3.0, below=True))
    if batched1 and raw:
        ratio = batched1.tokens_per_s / max(raw.tokens_per_s, 1e-9)
        checks.append(_goal("tokens/s at 1: aimass / ONNX Runtime alone >= 0.7", ratio, 0.7))
    return checks


def _goal(name: str, value: float, bound: float, below: bool = False) -> dict[str, Any]:
    met = value <= bound if below else value >= bound
    return {"goal": name, "value": round(value, 3), "met": met}


def table(levels: list[Level]) -> str:
    rows = [("system", "in flight", "tokens/s", "TTFT p50 ms", "TTFT p95 ms", "jobs")]
    for level in levels:
        s = level.summary()
        rows.append(
            (
                level.system,
                str(level.concurrency),
                f"{s['tokens_per_s']:,.0f}",
                f"{s['ttft_p50_ms']:.2f}",
                f"{s['ttft_p95_ms']:.2f}",
                str(level.jobs),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _say(level: Level) -> None:
    s = level.summary()
    print(
        f"  {level.system} at {level.concurrency}: {s['tokens_per_s']:,.0f} tokens/s, TTFT "
        f"p50 {s['ttft_p50_ms']:.2f} ms p95 {s['ttft_p95_ms']:.2f} ms ({level.jobs} jobs)",
        file=sys.stderr,
        flush=True,
    )


def run(options: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aimass-seqbench-") as work:
        workdir = Path(work)
        redis_server = RedisServer(workdir).start()
        try:
            raw = raw_loop(options) if 1 in options.concurrency else None
            levels: list[Level] = []
            for batching in (True, False):
                levels += measure_worker(
                    options, redis_server.url, batching, workdir, raw if batching else None
                )
        finally:
            redis_server.stop()
    return {
        "model": options.model,
        "devices": options.devices,
        "max_tokens": options.max_tokens,
        "max_sequences": options.max_sequences,
        "intra_op_threads": options.intra_op_threads,
        "levels": [level.summary() for level in levels],
        "goals": goals(levels),
        "table": table(levels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aimass.bench.sequence", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True, help="model repository")
    parser.add_argument("--model", required=True, help="a sequence model in it, e.g. charlm")
    parser.add_argument("--concurrency", default="1,8,32,128", help="jobs in flight per level")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per job (256)")
    parser.add_argument(
        "--jobs-per-slot",
        type=int,
        default=6,
        help=f"jobs per level per slot (6), {MIN_JOBS} a level at least",
    )
    parser.add_argument("--devices", default="cpu", help="cpu, or a GPU index (cpu)")
    parser.add_argument("--max-sequences", type=int, default=0, help="0: the largest level")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="ONNX Runtime threads, for the worker and the raw loop alike (0: the worker's "
        "choice); a small model steps faster on 1",
    )
    parser.add_argument("--json", type=Path, default=Path("bench-results/sequence.json"))
    args = parser.parse_args(argv)
    levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    options = Options(
        args.repository,
        args.model,
        levels,
        args.max_tokens,
        args.jobs_per_slot,
        args.devices,
        args.max_sequences or max(levels),
        args.intra_op_threads,
    )
    report = run(options)
    print(report["table"])
    for goal in report["goals"]:
        print(f"{'PASS' if goal['met'] else 'MISS'}  {goal['goal']}: {goal['value']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
