"""fewer_collections raises the young generation's threshold inside and restores it after."""

from __future__ import annotations

import gc

import pytest

from paystream.runtime import GC_GEN0_THRESHOLD, fewer_collections


def test_the_thresholds_are_raised_inside_and_restored_after_even_on_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
        raise RuntimeError("the replay stopped")
    assert gc.get_threshold() == before
