"""The benchbone command asks torch's CPU allocator for huge pages before torch is imported, unless told not to."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchbone.execution.allocator import KERNEL_SETTING, VARIABLE

LARGE_TENSOR_HUGE_KB = f"""
import os, sys
from benchbone.cli import main
main(["--version"])
import torch
x = torch.ones(64 * 2**18)  # 64 MiB, touched
rollup = open("/proc/self/smaps_rollup").read()
print(os.environ.get("{VARIABLE}"), int(rollup.split("AnonHugePages:")[1].split()[0]))
"""


def run_child(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if env_value is not None:
        env[VARIABLE] = env_value
    out = subprocess.run([sys.executable, "-c", LARGE_TENSOR_HUGE_KB], env=env, capture_output=True, text=True,
                         check=True).stdout.split()[-2:]
    return out[0], int(out[1])


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists() or not KERNEL_SETTING.exists()
                    or "[madvise]" not in KERNEL_SETTING.read_text(),
                    reason="needs Linux with transparent huge pages on madvise")
def test_the_command_backs_large_tensors_with_huge_pages_unless_the_environment_says_no():
    asked, huge_kb = run_child(None)
    assert asked == "1" and huge_kb >= 32 * 1024  # most of the 64 MiB tensor
    asked, huge_kb = run_child("0")
    assert asked == "0" and huge_kb < 32 * 1024
