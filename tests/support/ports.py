"""Ports for a worker supervisor's endpoints: its own, and one more per child process
(its metrics port plus one, two, ...: worker/cli.py)."""

from __future__ import annotations

import socket

from aimass.embedded_redis import free_port


def free_ports_in_a_row(count: int, tries: int = 200) -> int:
    """The first of ``count`` consecutive ports that nothing holds now. Linux hands out
    odd ports to a bind to port 0 and even ones to outgoing connections, so the port
    after a free one is the local port of an open connection as often as a busy test
    session has them: a child's endpoint could not bind it."""
    for _ in range(tries):
        first = free_port()
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("0.0.0.0", port))  # where the endpoints listen
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"found no {count} free ports in a row in {tries} tries")
