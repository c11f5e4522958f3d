#!/usr/bin/env bash
# Serve the `small` model on one CUDA GPU with NVML power agents, once per step governor, and run the
# same `wattserve bench` load against each: the GPU energy counter (NVML, not modelled), the SM clock
# gauge and the bench's latencies side by side. BiScale's governors (arXiv 2602.18755) against
# max-clock. Usage: RATE=8 PROMPTS=200 scripts/gpu_serve_check.sh OUTDIR [governor ...]; needs a CUDA
# GPU, torch and nvidia-ml-py. Prints one line per governor; the bench results land in OUTDIR.
set -euo pipefail
out=${1:?usage: gpu_serve_check.sh OUTDIR [governor ...]}
shift
govs=("${@:-max-clock biscale}")
mkdir -p "$out"
port=8123
for gov in ${govs[@]}; do
  python3 -m wattserve serve --model small --device cuda --colocated 1 --governor "$gov" --slo-tpot-ms 20 \
    --slo-ttft-ms 200 --power-backend nvml --port $port > "$out/serve-$gov.log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do grep -q "listening on" "$out/serve-$gov.log" && break; sleep 1; done
  e0=$(curl -s http://127.0.0.1:$port/metrics | awk '/^wattserve:gpu_energy_joules_total/ {print $2}')
  python3 -m wattserve bench --base-url http://127.0.0.1:$port --model small --num-prompts "${PROMPTS:-400}" --request-rate "${RATE:-40}" \
    --random-input-len 512 --random-output-len 128 --ignore-eos --seed 1 --save-result --result-dir "$out" \
    --result-filename "bench-$gov.json" > "$out/bench-$gov.txt" 2>&1
  m=$(curl -s http://127.0.0.1:$port/metrics)
  e1=$(echo "$m" | awk '/^wattserve:gpu_energy_joules_total/ {print $2}')
  clk=$(echo "$m" | awk '/^wattserve:gpu_sm_clock_mhz/ {print $0}')
  kill -TERM $pid; wait $pid || true
  python3 - "$out/bench-$gov.json" "$gov" "$e0" "$e1" "$clk" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = float(sys.argv[4]) - float(sys.argv[3])
print(json.dumps({"governor": sys.argv[2], "gpu_energy_j": e, "output_tokens": r["total_output_tokens"],
                  "joules_per_output_token": e / r["total_output_tokens"], "duration_s": r["duration"],
                  "mean_ttft_ms": r["mean_ttft_ms"], "mean_tpot_ms": r["mean_tpot_ms"],
                  "completed": r["completed"], "clock_gauge": sys.argv[5]}))
PY
done
