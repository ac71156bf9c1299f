"""Reading the workers' heartbeats: live ones only, parsed, in a stable order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from aimass.protocol.heartbeats import Heartbeat, ServedModelInfo, live_heartbeats, served_models
from aimass.protocol.keys import WORKER_HEARTBEAT_TTL_S, worker_key

pytestmark = pytest.mark.unit

NOW = 1_000_000.0


class Store:
    """The two Redis calls the scan makes, over a dict (a key may vanish between them)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.expiring: set[str] = set()

    def scan_iter(self, match: str, count: int) -> Iterator[str]:
        assert match.endswith("*")
        keys = [key for key in self.values if key.startswith(match[:-1])]
        for key in self.expiring:
            self.values.pop(key)
        return iter(keys)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.values.get(key) for key in keys]


def beat(hostname: str, age_s: float, *models: str) -> bytes:
    return json.dumps(
        {
            "hostname": hostname,
            "pid": 1,
            "updated_at": NOW - age_s,
            "models": [{"name": name} for name in models],
        }
    ).encode()


def test_only_fresh_heartbeats_count_and_come_sorted_by_hostname() -> None:
    store = Store(
        {
            worker_key("b@host"): beat("b@host", 1, "digits"),
            worker_key("a@host"): beat("a@host", 0, "digits", "alexnet"),
            worker_key("old@host"): beat("old@host", WORKER_HEARTBEAT_TTL_S + 1, "stale"),
            worker_key("gone@host"): beat("gone@host", 0, "gone"),
            "aimass:job:1": b"not a heartbeat",
        }
    )
    store.expiring.add(worker_key("gone@host"))
    beats = live_heartbeats(store, now=NOW)  # type: ignore[arg-type]
    assert [b.hostname for b in beats] == ["a@host", "b@host"]
    assert served_models(beats) == ["alexnet", "digits"]


def test_no_workers_no_heartbeats() -> None:
    assert live_heartbeats(Store({}), now=NOW) == []  # type: ignore[arg-type]
    assert served_models([]) == []


def test_a_heartbeat_without_a_time_is_not_live() -> None:
    raw: dict[str, Any] = {"hostname": "w@h", "models": []}
    store = Store({worker_key("w@h"): json.dumps(raw).encode()})
    assert live_heartbeats(store, now=NOW) == []  # type: ignore[arg-type]


def test_a_heartbeat_is_typed_at_both_ends_and_keeps_fields_it_does_not_know() -> None:
    written = Heartbeat(
        hostname="w@h",
        pid=7,
        ready=True,
        updated_at=NOW,
        device="gpu:0",
        models=[ServedModelInfo(name="digits", version=3, buckets=[1, 2, 4])],
    )
    read = Heartbeat.decode(written.encode())
    assert read == written and read is not None
    assert read.models[0].buckets == [1, 2, 4] and read.models[0].weights_shared is None
    newer = json.loads(written.encode()) | {"future_field": {"a": 1}}
    kept = Heartbeat.decode(json.dumps(newer))
    assert kept is not None and kept.as_json()["future_field"] == {"a": 1}
    assert Heartbeat.decode(b"not json") is None
    assert Heartbeat.decode(json.dumps({"pid": 1})) is None  # no hostname: not a heartbeat
