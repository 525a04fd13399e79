#!/usr/bin/env bash
# The GPU measurements in one command, side by side in one run, into results/perf-gpu.md:
#   1. ResNet-50 at 224 px, bf16 + channels_last: harness extraction against a bare loop, without and with
#      torch.compile;
#   2. the streaming JPEG loader (DataLoader workers = cores) and torchvision.io.decode_jpeg on the device,
#      against the model's forward pass (CIFAR-10 JPEG copy);
#   3. the linear probe's C sweep on the device against scikit-learn on the CPU (all cores), and cuML where
#      it is installed.
# Usage (repository root):  bash benchmarks/gpu.sh                 (CUDA; about 5 minutes on one GPU)
#                           bash benchmarks/gpu.sh --device cpu --tiny --out FILE   (the flow only, on CPU)
# Without CUDA it writes nothing under results/: a GPU number that was not measured is never written.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda tiny=0 out=results/perf-gpu.md
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --out) out=$2; shift 2 ;;
        *) echo "gpu.sh: unknown option $1; use --device DEV, --tiny, --out FILE" >&2; exit 2 ;;
    esac
done
if [ "$out" = results/perf-gpu.md ] && { [ "${device%%:*}" != cuda ] || [ $tiny = 1 ]; }; then
    echo "gpu.sh: results/perf-gpu.md holds full CUDA measurements only; pass --out FILE with --device $device or --tiny" >&2
    exit 2
fi
python -c "import torch, sys; sys.exit(0 if '$device'.split(':')[0] != 'cuda' or torch.cuda.is_available() else 1)" ||
    { echo "gpu.sh: --device $device: CUDA is not available on this machine; use --device cpu --tiny --out FILE" >&2; exit 2; }
if [ $tiny = 1 ]; then  # small enough for a CPU test of the flow
    extract="--images 8 --batch-size 4 --image-size 64 --repeats 1"
    loader="--images 64 --batch-size 16 --image-size 32 --model-batches 1"
    probe="--synthetic-rows 500 --no-real --repeat 1"
else
    extract="--images 4096 --batch-size 256 --image-size 224 --repeats 3"
    loader="--images 10000 --batch-size 256 --image-size 224 --model-batches 8"
    probe="--synthetic-rows 500000 --repeat 3 --image-size 224 --no-cifar10"
fi
cores=$(nproc)
threads=$([ $tiny = 1 ] && echo 1 || echo "$cores")
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
run() {
    printf '\n### %s\n\n```\n$ %s\n' "$1" "$2" >>"$tmp"
    bash -c "$2" >>"$tmp" 2>&1 || { echo "gpu.sh: failed: $2 (output in $out)" >&2; status=1; }
    printf '```\n' >>"$tmp"
}
status=0
{
    echo "# benchbone on the GPU"
    echo
    echo "Produced by \`bash benchmarks/gpu.sh$([ "$device" != cuda ] && echo " --device $device")$([ $tiny = 1 ] && echo " --tiny")\` on $(uname -m), $cores CPU cores, $(date -u '+%Y-%m-%d %H:%M UTC')."
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)."
    fi
    python -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, device $device')"
    [ $tiny = 1 ] && echo "Tiny mode: a check of the flow on toy sizes; these are not performance figures."
} >"$tmp"
run "1a. ResNet-50 extraction, bf16 + channels_last: harness vs bare loop" \
    "python benchmarks/bench_extraction.py --model resnet50 --device $device --precision bf16 $extract"
run "1b. The same with torch.compile" \
    "python benchmarks/bench_extraction.py --model resnet50 --device $device --precision bf16 --compile $extract"
run "2. Streaming JPEG loader ($cores workers) and decode_jpeg on the device vs the model" \
    "python benchmarks/bench_loader.py --backbone tv/resnet50 --device $device --device-decode $loader"
run "3. linear-probe sweep on $device vs scikit-learn on $threads CPU thread(s) (and cuML if installed)" \
    "python benchmarks/bench_probe.py --device $device --threads $threads $probe"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
exit $status
