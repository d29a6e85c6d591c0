"""The per-stage peak RSS: a high-water mark that a new stage can reset."""

import sys

import numpy as np
import pytest

from orchestrator.engine.memory import peak_rss_mb, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_peak_rss_sees_an_allocation_and_forgets_it_after_a_reset():
    reset_peak_rss()
    before = peak_rss_mb()
    block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB, every page touched
    during = peak_rss_mb()
    del block
    reset_peak_rss()
    after = peak_rss_mb()
    assert during - before >= 290
    assert after < during - 250
