"""What a benchmark run should show: the goals, on the CPU and on a GPU, and their
evaluation against each model's headline figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    """One target a model's headline figures should meet."""

    model: str
    text: str
    value_key: str
    target: Any  # a function of the headline giving the threshold
    unit: str
    higher_is_better: bool = True


# An idle worker must not make a lone job wait, on the CPU or a GPU.
LATENCY_GOALS = tuple(
    Goal(
        model,
        "concurrency 1: aimass p50 <= raw batch-1 latency + 3 ms",
        "aimass_p50_latency_ms_c1",
        lambda h: h["raw_batch1_latency_ms"] + 3.0,
        "ms",
        False,
    )
    for model in ("digits", "alexnet")
)

# On the CPU (--provider cpu).
GOALS = (
    Goal(
        "alexnet",
        "aimass images/s >= 0.8 x raw best batch",
        "aimass_images_per_s",
        lambda h: 0.8 * h["raw_best_images_per_s"],
        "img/s",
    ),
    Goal(
        "digits",
        "one image per job: aimass jobs/s >= 5 x naive jobs/s",
        "aimass_jobs_per_s",
        lambda h: 5.0 * h["naive_jobs_per_s"],
        "jobs/s",
    ),
    Goal(
        "digits",
        "multi-image jobs: aimass images/s >= 0.5 x raw best batch",
        "aimass_multi_images_per_s",
        lambda h: 0.5 * h["raw_best_images_per_s"],
        "img/s",
    ),
    *LATENCY_GOALS,
    Goal(
        "alexnet",
        "worker RSS <= 1.5 x model file size",
        "worker_rss_bytes",
        lambda h: 1.5 * h["model_file_bytes"],
        "bytes",
        False,
    ),
)


# On a GPU (--provider cuda): session.run is cheap there, so the queue, decoding and the
# worker's processes set the pace; the targets say how much of the GPU they leave unused.
GPU_GOALS = (
    Goal(
        "alexnet",
        "multi-image jobs: aimass images/s >= 0.8 x raw best batch",
        "aimass_multi_images_per_s",
        lambda h: 0.8 * h["raw_best_images_per_s"],
        "img/s",
    ),
    Goal(
        "alexnet",
        "one image per job: aimass images/s >= 0.3 x raw best batch",
        "aimass_images_per_s",
        lambda h: 0.3 * h["raw_best_images_per_s"],
        "img/s",
    ),
    Goal(
        "digits",
        "one image per job: aimass jobs/s >= 10,000",
        "aimass_jobs_per_s",
        lambda h: 10_000.0,
        "jobs/s",
    ),
    Goal(
        "digits",
        "multi-image jobs: aimass images/s >= 0.3 x raw best batch",
        "aimass_multi_images_per_s",
        lambda h: 0.3 * h["raw_best_images_per_s"],
        "img/s",
    ),
    *LATENCY_GOALS,
)


def goal_set(provider: str) -> str:
    """``gpu`` for a cuda run, else ``cpu``: which of the two sets of goals applies."""
    return "gpu" if provider == "cuda" else "cpu"


def goals_for(provider: str) -> tuple[Goal, ...]:
    return GPU_GOALS if goal_set(provider) == "gpu" else GOALS


def evaluate_goals(
    headlines: dict[str, dict[str, Any]], goals: tuple[Goal, ...] = GOALS
) -> list[dict[str, Any]]:
    """PASS, MISS or SKIP (not measured) for each goal, with its margin."""
    out = []
    for goal in goals:
        h = headlines.get(goal.model)
        entry: dict[str, Any] = {"model": goal.model, "goal": goal.text, "unit": goal.unit}
        try:
            value, target = h[goal.value_key], goal.target(h)  # type: ignore[index]
        except (TypeError, KeyError):
            value = target = None
        if value is None or target is None:
            out.append({**entry, "status": "SKIP", "value": None, "target": None})
            continue
        passed = value >= target if goal.higher_is_better else value <= target
        margin = (value / target - 1.0) if goal.higher_is_better else (target - value) / target
        out.append(
            {
                **entry,
                "status": "PASS" if passed else "MISS",
                "value": value,
                "target": target,
                "margin": margin,
            }
        )
    return out
