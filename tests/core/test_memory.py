"""The malloc arena cap the daemon applies at start (connector_core/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
from connector_core.memory import limit_malloc_arenas
print(limit_malloc_arenas())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_the_cap_is_applied_on_glibc_unless_the_operator_set_their_own():
    env_without = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    applied = subprocess.run([sys.executable, "-c", PROBE], env=env_without, capture_output=True, text=True, check=True)
    assert applied.stdout.strip() == "True"
    left_alone = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env_without, "MALLOC_ARENA_MAX": "4"}, capture_output=True, text=True, check=True
    )
    assert left_alone.stdout.strip() == "False"
