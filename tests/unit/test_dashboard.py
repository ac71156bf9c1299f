"""The Grafana dashboard queries only metrics the workers and their supervisor expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aimass.worker.metrics import Metrics
from aimass.worker.supervisor import Supervisor

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "aimass.json"
METRIC = re.compile(r"\baimass_[a-z_]+\b")


def exposed(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry's metrics can expose (counters as _total, histograms
    as _bucket, _sum and _count), whether or not a sample has been recorded yet."""
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(
            family.type, [""]
        )
        names.update(family.name + suffix for suffix in suffixes)
    return names


def queries(dashboard: dict) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    found += [item["query"] for item in dashboard["templating"]["list"] if item["type"] == "query"]
    return found


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    available = exposed(Metrics().registry) | exposed(Supervisor([]).registry)
    used = {name for query in queries(dashboard) for name in METRIC.findall(query)}
    assert len(used) >= 12, used
    assert used <= available, f"not exposed by any worker: {sorted(used - available)}"


def test_every_metric_a_worker_exposes_is_documented() -> None:
    documented = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    families = {
        family.name
        for registry in (Metrics().registry, Supervisor([]).registry)
        for family in registry.collect()
    }
    missing = sorted(name for name in families if f"`{name}" not in documented)
    assert not missing, f"not in docs/metrics.md: {missing}"


def test_the_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
