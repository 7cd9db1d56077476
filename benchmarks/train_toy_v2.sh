#!/usr/bin/env bash
# Train the built-in toy model (v2) on one GPU, in device calls of < 10 minutes each.
#   bash benchmarks/train_toy_v2.sh WORK OUT PHASE [ARGS...]
# Phases (each resumable: it skips what WORK already holds):
#   pretrain SECONDS            CLIP-style text encoder -> WORK/text
#   variants MINUTES W1 W2 ...  UNets with that encoder frozen and grounding weight Wi, in parallel
#                               processes -> WORK/g<Wi>; then a quick localisation + oracle check of each
#   resume NAME MINUTES LR_END W [TRAIN_ARGS...]  continue WORK/NAME with grounding weight W, LR decaying
#                               to LR_END, into WORK/NAME-2, and export the pipeline to WORK/NAME-2/pipeline
#   eval MODEL PROMPTS SEEDS    acceptance evaluation (oracle + localisation, 50 steps) -> OUT/eval_*.{json,md}
# Logs and small results go to OUT; weights stay in WORK (copy what must come back).
set -u
work=$1 out=$2 phase=$3
shift 3
mkdir -p "$work" "$out"
py=${PYTHON:-python3}

case $phase in
  pretrain)
    [ -f "$work/text/text_encoder.safetensors" ] && { echo "text encoder already in $work/text"; exit 0; }
    $py -m attnscope.models.toy.pretrain_text --out "$work/text" --seconds "$1" > "$out/pretrain_text.log" 2>&1
    tail -n 1 "$out/pretrain_text.log" ;;
  variants)
    minutes=$1
    shift
    for w in "$@"; do
      $py -m attnscope.models.toy.train --out "$work/g$w" --text-encoder "$work/text/text_encoder.safetensors" \
        --ground "$w" --minutes "$minutes" --save-ema-only --export-pipeline --log-every 100 \
        > "$out/train_g$w.log" 2>&1 &
    done
    wait
    for w in "$@"; do
      $py -m attnscope.runner.toy_evaluation --model "$work/g$w/pipeline" --prompts 64 --seeds 2 --steps 50 \
        --localise --batch 128 --out "$out/quick_g$w.json" --markdown "$out/quick_g$w.md" > "$out/quick_g$w.log" 2>&1 &
    done
    wait
    for w in "$@"; do echo "== g$w: $(tail -n 2 "$out/train_g$w.log" | head -n 1)"; cat "$out/quick_g$w.md"; done ;;
  resume)
    name=$1 minutes=$2 lr_end=$3 w=$4
    shift 4
    $py -m attnscope.models.toy.train --resume "$work/$name" --out "$work/$name-2" --ground "$w" \
      --minutes "$minutes" --lr-end "$lr_end" --save-ema-only --export-pipeline --log-every 100 --seed 1 "$@" \
      > "$out/train_$name-2.log" 2>&1
    tail -n 3 "$out/train_$name-2.log" ;;
  eval)
    model=$1 prompts=$2 seeds=$3
    tag=$(basename "$(dirname "$model")")
    $py -m attnscope.runner.toy_evaluation --model "$model" --prompts "$prompts" --seeds "$seeds" --steps 50 \
      --localise --batch 400 --out "$out/eval_$tag.json" --markdown "$out/eval_$tag.md" > "$out/eval_$tag.log" 2>&1
    cat "$out/eval_$tag.md" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
