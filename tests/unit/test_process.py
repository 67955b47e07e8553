"""The process seam's tree walk: a supervisor's sweep spares the supervisors it launched."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from testkit import wait_until

from emdx import system


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """A leaf child and a child with a child of its own (both in sleep)."""
    leaf = subprocess.Popen(["sleep", "60"])
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        yield leaf, parent
    finally:
        everyone = system.identify([leaf.pid, parent.pid, *system.descendants(parent.pid)])
        system.kill_identified(everyone, 1.0, force=True)
        leaf.wait()
        parent.wait()


def test_descendants_leave_out_a_spared_subtree(
    tree: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    leaf, parent = tree
    grandchild = wait_until(lambda: system.descendants(parent.pid), 10)
    me = os.getpid()
    everything = system.descendants(me)
    assert {leaf.pid, parent.pid, *grandchild} <= set(everything)
    assert everything.index(grandchild[0]) < everything.index(parent.pid)  # deepest first

    spared = system.descendants(me, spare=system.identify([parent.pid]))
    assert leaf.pid in spared
    assert parent.pid not in spared and grandchild[0] not in spared
    # An identity whose start time does not match is another process: nothing is spared.
    (pid, started) = system.identify([parent.pid])[0]
    assert parent.pid in system.descendants(me, spare=[(pid, started - 100.0)])
