"""The contract's old import paths under ``aimass.producer``: ``errors`` is the wire's name
for the typed errors; the other modules moved to ``aimass.protocol`` and still import, with a
DeprecationWarning, for one release."""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings

import pytest

from aimass.producer import MOVED_TO_PROTOCOL
from aimass.protocol import errors, manifest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(MOVED_TO_PROTOCOL))
def test_a_moved_module_imports_with_a_deprecation_warning(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, f"aimass.producer.{name}", raising=False)
    with pytest.warns(DeprecationWarning, match=f"import aimass.protocol.{name}"):
        old = importlib.import_module(f"aimass.producer.{name}")
    new = importlib.import_module(f"aimass.protocol.{name}")
    public = [key for key in vars(new) if not key.startswith("_")]
    assert public and all(getattr(old, key) is getattr(new, key) for key in public)


def test_the_old_path_gives_the_same_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "aimass.producer.manifest", raising=False)
    with pytest.warns(DeprecationWarning):
        from aimass.producer.manifest import ModelKind
    assert ModelKind is manifest.ModelKind


def test_errors_keep_the_module_name_the_wire_stores() -> None:
    """Celery stores ``exc_module`` and imports it to rebuild the error: no warning there."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wire = importlib.import_module("aimass.producer.errors")
    for name in wire.__all__:
        cls = getattr(errors, name)
        assert cls.__module__ == "aimass.producer.errors"
        assert getattr(wire, name) is cls
    error = pickle.loads(pickle.dumps(errors.InvalidInput("bad shape")))
    assert type(error) is errors.InvalidInput and error.message == "bad shape"
