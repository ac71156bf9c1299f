"""Which GPU a worker process sees and how its supervisor starts it: indices mapped
through a CUDA_VISIBLE_DEVICES that the node or container set, one Celery node name per
child, and cores pinned after the child has started."""

from __future__ import annotations

import os
import sys

import pytest

from aimass.worker.cli import child_hostname
from aimass.worker.devices import pin_process, visible_device
from aimass.worker.supervisor import Child, _launch

pytestmark = pytest.mark.unit


def test_visible_devices_map_an_index_through_the_list_already_set() -> None:
    assert visible_device(0, None) == "0" and visible_device(3, "") == "3"
    assert visible_device(1, "2,3") == "3"  # the node gave this container GPUs 2 and 3
    uuids = "GPU-8f1c2d3e-aaaa-bbbb-cccc-000000000001, GPU-8f1c2d3e-aaaa-bbbb-cccc-000000000002"
    assert visible_device(1, uuids) == "GPU-8f1c2d3e-aaaa-bbbb-cccc-000000000002"
    assert visible_device(0, "MIG-4b1d-0001") == "MIG-4b1d-0001"
    with pytest.raises(ValueError, match="makes only 2 visible"):
        visible_device(2, "2,3")


def test_visible_devices_pinning_narrows_the_list_and_orders_by_pci_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    pin_process(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # NVML's numbering too
    pin_process(None)  # the CPU: nothing changes
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-b"


def test_each_child_of_a_named_worker_gets_a_node_name_of_its_own() -> None:
    names = {child_hostname("worker@node7", label) for label in ("gpu0.0", "gpu0.1", "gpu1.0")}
    assert names == {"worker.gpu0.0@node7", "worker.gpu0.1@node7", "worker.gpu1.0@node7"}
    assert child_hostname("plain", "cpu.0") == "plain.cpu.0"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux pins cores")
def test_a_child_is_pinned_after_it_starts_without_a_preexec_hook() -> None:
    cores = sorted(os.sched_getaffinity(0))
    child = Child(
        "cpu.0",
        [sys.executable, "-c", "import time; time.sleep(5)"],
        dict(os.environ),
        cpus={cores[0]},
    )
    process = _launch(child)
    try:
        assert os.sched_getaffinity(process.pid) == {cores[0]}
    finally:
        process.kill()
        process.wait()
