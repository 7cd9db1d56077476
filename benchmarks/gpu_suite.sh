#!/usr/bin/env bash
# Every GPU measurement of attnscope, step by step (all of them take longer than one 10-minute device call:
# pick steps with ONLY, e.g. ONLY="gpu_tests capture_overhead" then ONLY="capture_compiled capture_dit").
#   bash benchmarks/gpu_suite.sh RESULTS_DIR [TOY_MODEL_DIR]
# ONLY="toy_eval capture_overhead ..." picks steps (default: all, in the order below);
# GUIDANCE="3 4" picks the guidance scales of the toy evaluation.
# Each step has its own time limit so one slow step cannot eat the others; logs go to RESULTS_DIR.
set -u
out=$1
model=${2:-toy}
only=${ONLY:-gpu_tests capture_overhead capture_compiled capture_dit see_scale writer_host toy_eval erasure_timing erasure_toy}
mkdir -p "$out"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds=$2; shift 2
  echo "== $name ($(date +%T))"
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1
  echo "   exit $? ; $(tail -n 1 "$out/$name.log")"
}
for name in $only; do
  case $name in
    toy_eval) for g in ${GUIDANCE:-4}; do
        step toy_eval_g$g 100 python3 -m attnscope.runner.toy_evaluation --model "$model" --prompts 200 --seeds 4 \
          --steps 50 --guidance "$g" --batch 400 --out "$out/toy_eval_g$g.json" --markdown "$out/toy_eval_g$g.md"
      done ;;
    capture_overhead) step capture_overhead 420 python3 benchmarks/capture_overhead.py --no-compile --no-daam --step-block 10 \
        --repeats "${REPEATS:-6}" --budget 400 --out "$out/capture_overhead.md" ;;
    capture_compiled) step capture_compiled 320 python3 benchmarks/capture_overhead.py --no-eager \
        --repeats "${REPEATS:-6}" --budget 300 --out "$out/capture_overhead_compiled.md" ;;
    capture_dit) for m in flux sd3.5; do
        step capture_dit_$m 300 python3 benchmarks/capture_overhead_dit.py --model $m --repeats "${REPEATS:-3}" \
          --out "$out/capture_overhead_dit.md"
      done ;;
    see_scale) step see_scale 300 python3 benchmarks/see_scale.py --repeats "${REPEATS:-3}" --out "$out/see_scale.md" ;;
    erasure_timing) step erasure_timing 90 python3 benchmarks/erasure_timing.py --repeats "${REPEATS:-3}" \
        --out "$out/erasure_timing.md" ;;
    gpu_tests) step gpu_tests 90 python3 -m pytest -q -m gpu tests -p no:cacheprovider ;;
    writer_host)  # the run writer on this machine's host CPU (no GPU): its drain, and what it costs a busy thread
      step writer_drain 150 python3 benchmarks/writer_drain.py --repeats 3 --out "$out/writer_drain.md"
      step writer_contention 150 python3 benchmarks/writer_contention.py --repeats 6 --out "$out/writer_contention.md" ;;
    erasure_toy) step erasure_toy 240 python3 benchmarks/erasure_toy.py --model "$model" --out "$out/erasure.md" ;;
  esac
done
