#!/usr/bin/env bash
# Run every performance script and write results/perf.md: each script's output under the exact command.
# Usage (from the repository root): bash benchmarks/perf.sh            (about 30 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/perf.md
tmp=$(mktemp)
run() {
    printf '\n### %s\n\n```\n$ %s\n' "$1" "$2" >>"$tmp"
    bash -c "$2" >>"$tmp" 2>/dev/null
    printf '```\n' >>"$tmp"
}
{
    echo "# benchbone performance"
    echo
    echo "Produced by \`bash benchmarks/perf.sh\` on $(uname -m), $(nproc) CPU cores, $(date -u '+%Y-%m-%d %H:%M UTC')."
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        echo "GPU: $(nvidia-smi -L | head -n 1)."
    else
        echo "No GPU on this machine: every figure below is a CPU figure; no GPU number is reported."
    fi
    echo "Each script measures both sides of a ratio in one process, interleaved where it can, and prints the"
    echo "load average: the machines are shared and noisy, so read the ratios rather than the absolute rates."
} >"$tmp"
run "1. Feature extraction: harness vs a bare loop of the same model (target >= 0.9 on CPU)" \
    "python benchmarks/bench_extraction.py --model resnet50 --images 96 --batch-size 32"
run "2. Loader vs model images/s (CIFAR-10 JPEG copy)" \
    "python benchmarks/bench_loader.py --images 2000 --image-size 64"
run "3a. linear-probe sweep vs scikit-learn LogisticRegression over the same strengths, one thread each (target >= 20x)" \
    "python benchmarks/bench_probe.py --threads 1 --repeat 3 --carves 4"
run "3a'. The same with both cores, each library threading its own way (one run each)" \
    "python benchmarks/bench_probe.py --threads 2 --repeat 1"
run "3b. linear-probe cell vs head-sgd cell, same backbone and data" \
    "python benchmarks/bench_head_sgd.py --image-size 64"
run "3c. linear-probe and knn on memory-mapped ImageNet-sized features (1,281,167 x 2,048 float16), 10% to 100% of the rows" \
    "python benchmarks/bench_outofcore.py"
run "4. CLI start-up against python -c pass (target under 0.5 s, no torch import; list backbones from its name index under 1 s)" \
    "python benchmarks/bench_startup.py --runs 7"
run "5. Instant reruns: a warm cell's wall time against its strategy time plus Python start (target <= 1.5x)" \
    "python benchmarks/bench_rerun.py --runs 3"
run "6. torch's large CPU tensors on 4 KiB pages vs transparent huge pages (the benchbone command asks for huge pages)" \
    "python benchmarks/bench_huge_pages.py --repeat 3"
mv "$tmp" "$out"
echo "wrote $out"
