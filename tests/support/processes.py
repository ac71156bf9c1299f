"""Real worker processes, started the way a user starts them (``aimass worker ...``), by
the launcher that the local stack and the benchmark use too: here with the tests'
defaults, a model repository and the CPU."""

from __future__ import annotations

from pathlib import Path

from aimass.launcher import WorkerProcess as LaunchedProcess
from aimass.launcher import aimass_command, child_env

__all__ = ["WorkerProcess", "aimass_command", "child_env"]


class WorkerProcess(LaunchedProcess):
    """``aimass worker --repository REPOSITORY --devices cpu ARGS``, with its log file."""

    def __init__(
        self,
        redis_url: str,
        repository: Path,
        log_path: Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        super().__init__(
            redis_url,
            ["--repository", str(repository), "--devices", "cpu", *(args or [])],
            log_path,
            env,
            command,
        )
        self.repository = repository
