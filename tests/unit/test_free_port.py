"""free_port never hands out a port twice in one process, even where the kernel returns
one again (a cluster's node could not start on a port another node was given)."""

from __future__ import annotations

import pytest

from aimass import embedded_redis

pytestmark = pytest.mark.unit


class _Socket:
    """A socket whose bind to port 0 finds the next of a scripted list of ports."""

    found: list[int] = []

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.found.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_found_again_is_not_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_redis, "_handed_out", set())
    monkeypatch.setattr(embedded_redis.socket, "socket", lambda *a, **k: _Socket())
    _Socket.found = [40001, 40001, 40001, 40003]
    assert embedded_redis.free_port() == 40001
    assert embedded_redis.free_port() == 40003


def test_it_says_so_when_every_port_it_finds_was_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_redis, "_handed_out", {40001})
    monkeypatch.setattr(embedded_redis.socket, "socket", lambda *a, **k: _Socket())
    _Socket.found = [40001] * 5
    with pytest.raises(RuntimeError, match="in 5 tries"):
        embedded_redis.free_port(tries=5)
