#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one command, for a session's single device run
# (shared/GPU.md). Prepare on the build machine, from the project root:
#
#   echo /.gl/ >> .git/info/exclude
#   L=$(mktemp -d); mkdir -p .gl $L/partial
#   o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$L"
#   apt-get $o update && (cd .gl && apt-get $o download libvulkan1)
#   cargo build --release
#
# then run `bash benches/gpu_run.sh` on the GPU machine with `.gl` and
# target/release/gradguard carried over. Results land in $OUT (default gpu-out/): the
# adapter list, nvidia-smi's view, and one JSON report per benchmark, ours and PyTorch's.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"

for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
export WGPU_BACKEND=vulkan
g=./target/release/gradguard

# Each step keeps going if another failed: one device run must bring back all it can.
step() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" >"$out/$name" 2>"$out/$name.err"
    echo "   exit $?, $((SECONDS - start)) s"
}
step nvidia-smi.csv nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv
step devices.json "$g" devices --json
step bench.json "$g" bench --json --reps 21
step torch_peer.json python3 benches/torch_clip_peer.py --device cuda --reps 21
step matmul.json "$g" bench matmul --json
# Ours and the PyTorch CUDA peer (benches/torch_train_peer.py) in one run, with the ratios.
step train.json "$g" bench train --json --peer cuda
# Pascanu's Figure 7 at a budget lavapipe cannot reach (its 250-update default shows
# nothing there); capped at 5 minutes so that the run always comes back.
step paper.txt timeout 300 "$g" lab --paper --updates 20000 --seeds 2 --out "$out/paper"
tail -n 3 "$out"/*.err
