"""benchmarks/gpu.sh: its flow on the CPU (--device cpu --tiny), and that it never writes an unmeasured GPU figure."""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True,
                          timeout=600)


def test_without_cuda_nothing_goes_to_results():
    published = REPO / "results" / "perf-gpu.md"
    before = published.read_bytes() if published.exists() else None
    result = gpu_sh("--device", "cpu")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "results/perf-gpu.md holds full CUDA measurements only" in result.stderr
    assert (published.read_bytes() if published.exists() else None) == before


@pytest.mark.slow
def test_tiny_cpu_flow_writes_every_section(tmp_path):
    out = tmp_path / "perf-gpu.md"
    result = gpu_sh("--device", "cpu", "--tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr + (out.read_text() if out.exists() else "")
    text = out.read_text()
    assert "Tiny mode: a check of the flow on toy sizes; these are not performance figures." in text
    for heading, evidence in [("### 1a. ResNet-50 extraction", "| ratio harness / bare |"),
                              ("### 1b. The same with torch.compile", "'compile': True"),
                              ("### 2. Streaming JPEG loader", "decode_jpeg on cpu, batches of 16"),
                              ("### 3. linear-probe sweep on cpu", "| synthetic Gaussians | 450 x 64 | 1 / 1 / 1 | cpu |")]:
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        assert evidence in section, (heading, section)
    assert "Traceback" not in text
