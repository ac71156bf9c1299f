"""A bad setting stops a command at once, with one line that says which and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import aimass_command, child_env

pytestmark = pytest.mark.e2e

# Nothing listens here: a command that got as far as Redis would fail differently.
NO_REDIS = "redis://127.0.0.1:9/0"


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (["worker", "--devices", "cpu"], {"AIMASS_CONCURRENCY": "-3"}, "AIMASS_CONCURRENCY"),
        (["worker", "--devices", "cpu", "--concurrency", "0"], {}, "AIMASS_CONCURRENCY"),
        (["worker"], {"REDIS_URL": "redis://:hunter2@localhost:99999/0"}, "REDIS_URL"),
        (["check"], {"AIMASS_LOG_LEVEL": "loud"}, "AIMASS_LOG_LEVEL"),
        (["status", "some-job"], {"AIMASS_MAX_QUEUE_DEPTH": "-1"}, "AIMASS_MAX_QUEUE_DEPTH"),
    ],
    ids=["worker-env", "worker-flag", "worker-url", "check", "producer"],
)
def test_a_bad_setting_exits_2_with_one_line_and_no_traceback(
    args: list[str], env: dict[str, str], name: str
) -> None:
    done = subprocess.run(
        [*aimass_command(), *args],
        env=child_env(NO_REDIS, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"{name}=" in done.stderr and "expected" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "hunter2" not in done.stderr  # a Redis password is never printed


def test_celerys_own_command_says_a_bad_setting_in_one_line_too() -> None:
    celery = str(Path(sys.executable).parent / "celery")
    done = subprocess.run(
        [celery, "-A", "aimass.worker.main", "inspect", "ping"],
        env=child_env(NO_REDIS, AIMASS_CONCURRENCY="-3"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "aimass: error: AIMASS_CONCURRENCY='-3' is not a valid count: expected auto or a "
        "whole number of at least 1"
    ]
