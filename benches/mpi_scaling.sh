#!/usr/bin/env bash
# Data-parallel scaling of `gradguard bench train` on one machine: one process, then
# `mpirun -np 1` and `-np 2` (unbound, and bound one core per rank as Open MPI does by
# default), each the three bench models, one after another, nothing else running. Prints a
# Markdown table for BENCHMARKS.md. Needs a build with `--features mpi`:
#
#   cargo build --release --features mpi && bash benches/mpi_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
g=./target/release/gradguard
export OMPI_MCA_mpi_yield_when_idle=1 # a rank waiting in the sum yields its core
out=$(mktemp -d)
mpi="mpirun --allow-run-as-root --oversubscribe"
$g bench train --json >"$out/plain.json"
$mpi -np 1 --bind-to none $g bench train --json >"$out/np1.json"
$mpi -np 2 --bind-to none $g bench train --json >"$out/np2.json"
$mpi -np 2 --bind-to core $g bench train --json >"$out/np2core.json"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
runs = [("1 process", "plain"), ("mpirun -np 1", "np1"), ("mpirun -np 2", "np2"), ("mpirun -np 2, bound to a core each", "np2core")]
reports = {k: json.load(open(f"{d}/{k}.json")) for _, k in runs}
print(f"adapter: {reports['plain']['adapter']} ({reports['plain']['backend']})\n")
print("| model | run | steps/s | × 1 process | KiB summed / step | sum ms / step | staging ms / step | submits / step |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for i, r in enumerate(reports["plain"]["results"]):
    base = r["steps_per_s"]
    for name, k in runs:
        x = reports[k]["results"][i]
        red = x.get("reduce")
        kib = f"{red['bytes_per_step'] / 1024:.1f}" if red else "-"
        ms = f"{red['reduce_ms_per_step']:.3f}" if red else "-"
        st = f"{red['staging_ms_per_step']:.3f}" if red else "-"
        print(f"| {x['model']} | {name} | {x['steps_per_s']:.1f} | {x['steps_per_s'] / base:.2f} | {kib} | {ms} | {st} | {x['submits_per_step']:.0f} |")
PY
