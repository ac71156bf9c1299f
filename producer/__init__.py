"""aimass producer: the client that enqueues jobs and reads their results.

Imports nothing of ONNX Runtime or TensorFlow. The client (and Celery behind it) is
imported on first use, so that importing the package stays light. The wire contract it
speaks is :mod:`aimass.protocol`; the contract's names re-exported here stay.

The contract's modules lived here until 0.2 (``aimass.producer.manifest`` and the like):
those paths still import, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

from aimass.protocol.contract import CONTRACT_VERSION, Priority
from aimass.protocol.errors import (
    AimassError,
    InvalidInput,
    InvalidJob,
    JobExpired,
    JobTimeout,
    ModelError,
    PayloadTooLarge,
    QueueFull,
    UnknownModel,
)
from aimass.protocol.manifest import ModelKind

__all__ = [
    "CONTRACT_VERSION",
    "AimassError",
    "Client",
    "InvalidInput",
    "InvalidJob",
    "Job",
    "JobExpired",
    "JobStatus",
    "JobTimeout",
    "ModelError",
    "ModelKind",
    "PayloadTooLarge",
    "Priority",
    "QueueFull",
    "UnknownModel",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "Job", "JobStatus"):
        from aimass.producer import client

        return getattr(client, name)
    raise AttributeError(f"module 'producer' has no attribute {name!r}")


# The contract's modules that lived in this package, now in aimass.protocol. (``errors``
# is a module here still: a stored failure names it.)
MOVED_TO_PROTOCOL = frozenset(
    {
        "codecs",
        "connections",
        "contract",
        "heartbeats",
        "keys",
        "manifest",
        "messages",
        "pubsub",
        "records",
        "schema",
        "settings",
        "tracing",
    }
)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``aimass.producer.<moved>`` as a copy of ``aimass.protocol.<moved>``, with a
    DeprecationWarning."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED_TO_PROTOCOL:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        new = "aimass.protocol." + module.__name__.rpartition(".")[2]
        warnings.warn(
            f"{module.__name__} is deprecated: import {new}", DeprecationWarning, stacklevel=2
        )
        moved = importlib.import_module(new)
        module.__dict__.update(
            {key: value for key, value in vars(moved).items() if not key.startswith("__")}
        )


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
