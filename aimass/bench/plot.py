"""The benchmark's plot: per model, throughput against concurrency and the latency CDFs
(a PNG, with matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aimass.bench.report import levels_of


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


PLOT_HINT = (
    "the plot needs matplotlib: pip install matplotlib (it comes with pip install 'aimass[dev]')"
)


def check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(PLOT_HINT) from None


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Per model: throughput against concurrency, and the latency CDFs."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"].items())
    figure, axes = plt.subplots(len(models), 2, figsize=(12, 4.5 * len(models)), squeeze=False)
    for row, (name, model) in enumerate(models):
        _plot_throughput(axes[row][0], name, model)
        _plot_latency(axes[row][1], name, model)
    figure.suptitle(
        f"aimass bench on {results['machine']['cpu_model']}, "
        f"{results['machine']['usable_cores']} cores "
        f"({results['machine']['provider']})"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_throughput(ax: Any, name: str, model: dict[str, Any]) -> None:
    for system, style in (("aimass", "o-"), ("naive", "s--")):
        levels = levels_of(model.get(system))
        if levels:
            ax.plot(
                [lv["concurrency"] for lv in levels],
                [lv["images_per_s"] for lv in levels],
                style,
                label=f"{system} (1 image/job)",
            )
    multi = [lv for lv in (model.get("aimass") or {}).get("levels", []) if lv["images_per_job"] > 1]
    for lv in multi:
        ax.plot(
            [lv["concurrency"]],
            [lv["images_per_s"]],
            "D",
            label=f"aimass ({lv['images_per_job']} images/job)",
        )
    if model.get("raw_best_images_per_s"):
        ax.axhline(
            model["raw_best_images_per_s"],
            color="grey",
            linestyle=":",
            label=f"raw best (batch {model['raw_best_batch_size']})",
        )
        ax.axhline(
            model["raw_batch1_images_per_s"], color="grey", linestyle="-.", label="raw batch 1"
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(matplotlib_formatter())
    ax.yaxis.set_major_formatter(matplotlib_formatter())
    low, high = ax.get_ylim()
    if high < 10 * low:  # less than a decade: label the minor ticks too
        ax.yaxis.set_minor_formatter(matplotlib_formatter())
    ax.set_xlabel("jobs in flight per producer")
    ax.set_ylabel("images/s (median of rounds)")
    ax.set_title(f"{name}: throughput ({model['origin']} model)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def matplotlib_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def _plot_latency(ax: Any, name: str, model: dict[str, Any]) -> None:
    quantiles = [q / 100 for q in range(101)]
    for system, style in (("aimass", "-"), ("naive", "--")):
        for lv in (model.get(system) or {}).get("levels", []):
            if lv["latency_cdf_ms"]:
                ax.plot(
                    lv["latency_cdf_ms"],
                    quantiles,
                    style,
                    label=f"{system} c={lv['concurrency']} x{lv['images_per_job']}",
                )
    ax.set_xscale("log")
    ax.set_xlabel("latency, submit to result read (ms)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(f"{name}: latency CDF (all rounds pooled)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
