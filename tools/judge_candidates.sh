#!/usr/bin/env bash
# Measure candidate worlds on this CPU the way every candidate since 2026-12-05 has been measured, beside
# the shipped world, and compare them: a world replaces the shipped one only when it is better on every
# measure (issue 17). Two evaluations at a time, one thread each: about half an hour of one core per model
# and kind set, so four models take about an hour on 2 cores.
#
#   bash tools/judge_candidates.sh OUT NAME=CHECKPOINT ...
#   e.g. after a lease (docs/training.md, "Continuing, and a GPU lease"):
#   bash tools/judge_candidates.sh /tmp/judge sf=RUN/self-forcing/model.safetensors ode=RUN/ode/model.safetensors \
#     half=RUN/self-forcing/snapshots/step-000600/model.safetensors
#
# The held-out recordings are made when missing, under HELD (default /tmp/wm_held): T, seed 1 (12 explore and
# 8 random-key walks of 800 frames), and W, seed 2 (28 explore and 12 random-key), seeds no lease trains on
# (the lease records seed 0). Each model (the shipped `overworld` added unless SHIPPED=0) is measured on
# KINDS (default "short0 short1 walls long"):
#   short0  all 20 episodes of T, eval seed 0, 256 wall-and-move moments: PSNR@1/@16, sharpness, action
#           following, the view's moves and stops
#   short1  the same with eval seed 1 and 32 moments (a second draw of the noise)
#   walls   40 episodes of W, 256 moments: the stops where the game refused a move, more of them
#   long    8 episodes of T, 4 starts x 2 000 frames scripted and idle beside the real game, eval seed 0
# Writes OUT/NAME-KIND/ (eval.md, eval.json, the sheets; a log beside each) and, per kind,
# OUT/compare-KIND/compare.md (`worldmodel eval-compare`). A report already there is kept (rerun by deleting
# it), so an interrupted judging goes on where it stopped.
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT=$1
shift
HELD=${HELD:-/tmp/wm_held}
KINDS=${KINDS:-short0 short1 walls long}
JOBS=${JOBS:-2}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE  # one thread an evaluation, JOBS at a time
WM=${WM:-worldmodel}

MODELS=()
[ "${SHIPPED:-1}" = 1 ] && MODELS+=("shipped=overworld")
for pair in "$@"; do
  name=${pair%%=*} ckpt=${pair#*=}
  if [ "$name" = "$pair" ] || [ -z "$name" ] || [ -z "$ckpt" ]; then
    echo "error: '$pair' is not NAME=CHECKPOINT" >&2
    exit 2
  fi
  if [[ "$name" == *[!A-Za-z0-9_.-]* ]]; then
    echo "error: the name '$name' may hold only letters, digits, '.', '_' and '-'" >&2
    exit 2
  fi
  if [ ! -f "$ckpt" ]; then
    echo "error: $ckpt: no such checkpoint (for $name)" >&2
    exit 2
  fi
  MODELS+=("$name=$ckpt")
done
for kind in $KINDS; do
  case $kind in short0 | short1 | walls | long) ;; *)
    echo "error: unknown kind '$kind' (short0, short1, walls, long)" >&2
    exit 2
    ;;
  esac
done

record() {  # record DIR SEED EXPLORE RANDOM: the held-out walks, once
  local dir=$1 seed=$2
  [ -f "$dir/manifest.json" ] && return 0
  echo "recording $dir (seed $seed)"
  $WM record --game overworld --agent explore --episodes "$3" --steps 800 --workers 2 --seed "$seed" \
    --out "$dir" --quiet &&
    $WM record --game overworld --agent random --episodes "$4" --steps 800 --workers 2 --seed "$seed" \
      --out "$dir" --quiet
}
record "$HELD/T" 1 12 8 || exit 1
[[ " $KINDS " == *" walls "* ]] && { record "$HELD/W" 2 28 12 || exit 1; }

COMMON="--probe-steps 1500 --probe-batch 64 --reference-frames 5000 --device cpu --short-frames 64 --early 100"
args_for() {  # args_for KIND: the eval flags of that kind
  case $1 in
    short0) echo "--data $HELD/T --episodes 20 --long-frames 0 --motion-moments 256 --seed 0" ;;
    short1) echo "--data $HELD/T --episodes 20 --long-frames 0 --motion-moments 32 --seed 1" ;;
    walls) echo "--data $HELD/W --episodes 40 --long-frames 0 --motion-moments 256 --seed 0" ;;
    long) echo "--data $HELD/T --episodes 8 --long-frames 2000 --long-starts 4 --bucket 400 --motion-moments 32 --seed 0" ;;
  esac
}

jobs_file=$OUT/jobs.txt
: > "$jobs_file"
for kind in $KINDS; do
  for pair in "${MODELS[@]}"; do
    name=${pair%%=*} ckpt=${pair#*=} dir=$OUT/${pair%%=*}-$kind
    [ -f "$dir/eval.json" ] && continue
    echo "$WM eval --checkpoint $ckpt $COMMON $(args_for "$kind") --out $dir > $dir.log 2>&1 && echo done $name-$kind || echo FAILED $name-$kind: see $dir.log" >> "$jobs_file"
  done
done
echo "$(wc -l < "$jobs_file") evaluations to run, $JOBS at a time, into $OUT"
xargs -P "$JOBS" -I{} -d '\n' bash -c '{}' < "$jobs_file"

for kind in $KINDS; do
  pairs=()
  for pair in "${MODELS[@]}"; do
    dir=$OUT/${pair%%=*}-$kind
    [ -f "$dir/eval.json" ] && pairs+=("${pair%%=*}=$dir")
  done
  ((${#pairs[@]})) && $WM eval-compare --out "$OUT/compare-$kind" "${pairs[@]}" > /dev/null &&
    echo "compared: $OUT/compare-$kind/compare.md"
done
