#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in one call that ends inside DEADLINE seconds
# (default 560), most wanted first: the kernel's tests compiled for the GPU, the kernel
# benchmark (+ a launch-configuration sweep at the base and sf-1.3b shapes), a check that the
# compiled and triton backends draw eager's frames, `worldmodel profile` of the shipped model
# with every backend (and compiled without its rewrites, merged, with SDPA, with max-autotune), of
# sf-1.3b (eager, compiled, triton), and of small/base. TRAIN=1 also records data and trains the
# overworld model first, continuing from what assets/overworld ships (time-boxed stages, the quality
# ladder at the end). Each step gets a time limit; a step that fails or runs out leaves the others.
# STEPS="tests bench profile-tiny ..." runs a subset; STEPS=none with TRAIN=1 only trains.
#
#   TRAIN=1 STEPS=none OUT=/tmp/gpu bash tools/gpu_session.sh   # a lease spent on training (issue 17)
#   OUT=/tmp/gpu bash tools/gpu_session.sh                      # the measurements, on the GPU machine
#   SMOKE=1 ... bash tools/gpu_session.sh                       # the same steps, tiny, on a CPU (a dry run)
#
# What comes back (under $OUT, at most 8 files): gpu.log, benchmarks.tar.gz (unpack into
# docs/benchmarks/), and with TRAIN=1 run.tar.gz (the run's histories, throughput, summary, report,
# ladder, play video) and the trained weights as weights.tar.part-* (teacher/, ode/ and
# self-forcing/model.safetensors, or the run's model.safetensors where the ladder chose a snapshot): `cat weights.tar.part-* | tar -xf - -C D`. LADDER_FRAMES=0 leaves
# the ladder to a CPU afterwards (`worldmodel ladder --run D`), its minutes given to training.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
SMOKE=${SMOKE:-0}
TRAIN=${TRAIN:-0}
DEADLINE=${DEADLINE:-560}
CONTEXT_AUG=${CONTEXT_AUG:-0.3}  # the training recipe's choices (docs/training.md, "The recipe at CPU scale")
# Self Forcing's rollout: 24 frames (the ring wraps in training as in play); from the best CPU teacher it beat
# 12 on every long measure, where from a weak one at 5x the rate it had diverged (docs/training.md, "Fewer
# steps, and Self Forcing's rollout"); the run ships its ODE student if the ladder finds Self Forcing worse
ROLLOUT_FRAMES=${ROLLOUT_FRAMES:-24}
# IDLE_ROLLOUTS=P: Self Forcing plays that share of its rollouts with no key after the context (default:
# `train all`'s, 0.25; 0: none; docs/training/tiny-gpu-2/README.md)
IDLE_ROLLOUTS=${IDLE_ROLLOUTS:-}
# STOP_WEIGHT=X: the teacher draws its clips in proportion to 1 + X times their moves the game refused
# (`--stop-weight`; default here 0.5, `train all`'s 0; STOP_WEIGHT=0: uniform). On the CPU test bed X = 0.5
# doubled the walls the teacher keeps (0.24 -> 0.51), and its ODE pairs carried them to the student (the whole
# chain: 0.42 -> 0.74), at some cost in moves and sharpness (docs/training/tiny-gpu-2/README.md, "Walls and moves")
STOP_WEIGHT=${STOP_WEIGHT:-0.5}
# ROLLOUT_STOP_WEIGHT=X: Self Forcing draws its rollouts the same way (`--rollout-stop-weight`; default 0)
ROLLOUT_STOP_WEIGHT=${ROLLOUT_STOP_WEIGHT:-}
# STOP_GUIDANCE=G, ODE_STOP_GUIDANCE=G: the teacher's guidance on the frames whose key the game refused in
# the recording, in DMD's real score / in the ODE pairs (`--stop-guidance`, `--ode-stop-guidance`; default:
# --guidance's 3 there too; docs/training/tiny-h100-3/README.md, "Guidance on the refused moves")
STOP_GUIDANCE=${STOP_GUIDANCE:-}
ODE_STOP_GUIDANCE=${ODE_STOP_GUIDANCE:-}
# ODE_IDLE_GUIDANCE=G: the teacher's guidance in the ODE pairs on frames where no key is pressed
# (`--ode-idle-guidance`; default: --guidance's 3). The shipped teacher unguided holds a world still at rest
# for 300 frames at 4 starts of 4, guided at 3 it fills it with creatures (docs/training/teacher-rest/)
ODE_IDLE_GUIDANCE=${ODE_IDLE_GUIDANCE:-}
# CONTEXT_NOISE_IDLE=T, SINK_NOISE=T: Self Forcing writes a chunk drawn at rest into its cache at T (under keys
# clean), and the session's first frame again at T once it has left the window and is only the cache's sink
# (`--context-noise-idle`, `--sink-noise`; default here 0.3 each, `train all`'s none; empty: off). On the CPU
# test bed, in five models of five, the player held at every idle start and 32-47 % of idle frames out of
# distribution against 90 %, no lattice of creatures, at 0.1 dB of PSNR@1 (docs/training/tiny-gpu-2/README.md,
# "The sink written again at rest's level")
CONTEXT_NOISE_IDLE=${CONTEXT_NOISE_IDLE-0.3}
SINK_NOISE=${SINK_NOISE-0.3}
# SNAPSHOTS=N: `--snapshots N`, Self Forcing's student also kept at N points evenly spaced over its minutes;
# with a ladder here (LADDER_FRAMES > 0) it measures each and `--final best` may choose one, which comes back
# as the run's model.safetensors in Self Forcing's last student's place. Without one, the snapshots come back
# themselves, as many as fit beside the students in the 64 MiB (one, in the teacher's place when the teacher
# is kept as it ships: a CPU rebuilds it from assets/), for a CPU's eval to choose along the stage. Default:
# 1 when the teacher is kept and the ladder left to a CPU (the lease command of issue 17), else 0
SNAPSHOTS=${SNAPSHOTS:-}
# EXPLORE=explore:idle=0.5: the explore agent's spec for the recording (default: explore, whose walks are
# followed by a rest of 10-60 frames a quarter of the time); more rest teaches the teacher to hold still
EXPLORE=${EXPLORE:-explore}
# KEEP_TEACHER=1 (default): a shipped world's teacher (INIT=overworld) is kept as it ships (`--stage-steps
# teacher=0`) and its minutes go to the students; 0: it trains on. The lease of 2026-12-05 trained it 2.6
# minutes more, and its ODE pairs and DMD score kept fewer walls than the shipped one's (57 stops: 0.63 and
# 0.52 against 0.67; docs/training/tiny-h100-3/README.md): a teacher's minutes that do not ship are spent again
KEEP_TEACHER=${KEEP_TEACHER:-1}
KEPT=0  # the teacher kept: KEEP_TEACHER, a shipped teacher, and INIT left to continue it (below)
[ "$KEEP_TEACHER" = 1 ] && [ -f assets/overworld/teacher.safetensors ] && [ "${INIT:-overworld}" = overworld ] && KEPT=1
# LR=self-forcing=2e-5,...: `--stage-lr`, a stage's learning rate (default: each stage's own); EXTRA: more
# `train all` flags as they are, e.g. EXTRA="--teacher-steps 32" (docs/training/tiny-gpu-2/README.md)
LR=${LR:-}
EXTRA=${EXTRA:-}
# the student's and the teacher's shapes when not the preset's (e.g. STUDENT_SHAPE=dim=128,heads=2: a
# student narrower than its teacher, trained from its own start by the `student` stage; docs/training.md)
STUDENT_SHAPE=${STUDENT_SHAPE:-}
TEACHER_SHAPE=${TEACHER_SHAPE:-}
# ODE_TEACHER=ar: the ODE stage's pairs from an AR diffusion model trained after the teacher (`train all
# --ode-teacher ar`, Causal Forcing; its minutes taken from the teacher's); default: the teacher's
ODE_TEACHER=${ODE_TEACHER:-teacher}
# ROLLOUT_ENGINE=static|cached: Self Forcing's rollout (`--rollout-engine`; default `train all`'s auto: static on
# the GPU, its passes without a gradient replayed as CUDA graphs, checked against the cached engine's clip at the
# start and every 200 steps, the cached engine taken instead if it fails; the dry run takes static, uncaptured)
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-}
# GROW_BATCH=1 (default): `--grow-batch`, each stage's batch (BATCH) doubled before it starts while a
# doubling costs a step at most 1.25x the time, up to 8x; 0 keeps BATCH as given
GROW_BATCH=${GROW_BATCH:-1}
STEPS=${STEPS:-"tests bench check profile-tiny profile-tiny-plain profile-tiny-merged profile-tiny-sdpa profile-big profile-big-kernel profile-small-base profile-tiny-autotune sweep profile-sessions profile-sessions-compiled"}
WORK=${WORK:-/tmp/wm_gpu}
rm -rf "$WORK" && mkdir -p "$WORK/bench"
B=$WORK/bench
T0=$(date +%s)
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the GPU image lacks (gymnasium), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
WM="python3 -m app.cli"

left() { echo $((DEADLINE - ($(date +%s) - T0))); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
# step NAME SECONDS CMD...: run CMD with at most SECONDS (and never past the deadline, 20 s kept
# for packing up); say how it ended
step() {
  local name=$1 limit=$2 rest
  shift 2
  rest=$(($(left) - 20))
  ((limit > rest)) && limit=$rest
  if ((limit < 5)); then
    echo "== $name: skipped, no time left"
    return 1
  fi
  echo "== $name (limit ${limit}s) at $(($(date +%s) - T0))s: $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc at $(($(date +%s) - T0))s"
  return $rc
}

if [ "$SMOKE" = 1 ]; then
  export TRITON_INTERPRET=1 OMP_WAIT_POLICY=PASSIVE  # a shared 2-core machine: no spinning threads
  DEV=cpu EPISODES=6 STEPS_PER=200 WORKERS=2
  MINUTES=${MINUTES:-ae=0.15,teacher=0.2,student=0.15,ar=0.15,ode=0.15,self-forcing=0.2}
  BATCH=${BATCH:-ae=16,teacher=4,student=4,ar=4,ode=2,self-forcing=2}
  TRAIN_LIMIT=300 LADDER_FRAMES=${LADDER_FRAMES:-8} LADDER_LONG=20 ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-static}
  BENCH=(--smoke) SWEEP=(--smoke --sweep) FRAMES=20 FILL=(--fill 5) BACKENDS=eager,compiled
  BIG=small BIG_FRAMES=6 BIG_BACKENDS=eager SB_BACKENDS=eager SB_FRAMES=4 SB_FILL=3 SB_PRESETS=small CHECK_FRAMES=4
  SESSIONS=1,2 SESSIONS_COMPILED=1,2
else
  export TRITON_INTERPRET=0
  DEV=cuda EPISODES=128 STEPS_PER=800 WORKERS=12
  # one lease's pipeline: about 8.5 minutes of stages, the ladder, packing (docs/training.md, "A lease")
  # (a student shaped unlike its teacher takes 1 of the teacher's minutes for its own start)
  # (a student that differs only in its steps, e.g. steps=3, is the teacher's network: no student stage)
  NET_SHAPE=$(tr ',' '\n' <<< "$STUDENT_SHAPE" | grep -v '^steps=' | paste -sd, -)
  if [ -n "$NET_SHAPE" ]; then MINUTES=${MINUTES:-ae=0.5,teacher=2.5,student=1.0,ode=1.0,self-forcing=2.5}
  elif [ "$ODE_TEACHER" = ar ]; then MINUTES=${MINUTES:-ae=0.5,teacher=2.5,ar=1.0,ode=1.0,self-forcing=2.5}
  elif [ "$KEPT" = 1 ]; then
    MINUTES=${MINUTES:-ae=0.5,teacher=0.5,ode=2.0,self-forcing=5.5}  # the teacher kept: its entry unused
  else MINUTES=${MINUTES:-ae=0.5,teacher=3.5,ode=1.0,self-forcing=2.5}; fi
  BATCH=${BATCH:-ae=128,teacher=64,student=64,ar=64,ode=32,self-forcing=16}
  TRAIN_LIMIT=${TRAIN_LIMIT:-560} LADDER_FRAMES=${LADDER_FRAMES:-32} LADDER_LONG=300
  BENCH=(--shapes "${BENCH_SHAPES:-tiny,small,base,sf-1.3b}") SWEEP=(--sweep --shapes "${SWEEP_SHAPES:-base,sf-1.3b}") FRAMES=300 FILL=() BACKENDS=all
  BIG=sf-1.3b BIG_FRAMES=12
  BIG_BACKENDS=${BIG_BACKENDS:-compiled,eager,triton}  # no onnx: a 1.3B export is over protobuf's 2 GB
  SB_BACKENDS=compiled,eager,triton SB_FRAMES=100 SB_FILL=20 SB_PRESETS="small base" CHECK_FRAMES=40
  SESSIONS=${SESSIONS:-1,2,4,8,16,32,64,128}
  SESSIONS_COMPILED=${SESSIONS_COMPILED:-1,8,32,128}  # fewer: each count compiles its own batch sizes
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
if [ -z "$SNAPSHOTS" ]; then
  SNAPSHOTS=0
  [ "$KEPT" = 1 ] && [ "$LADDER_FRAMES" = 0 ] && SNAPSHOTS=1
fi
python3 -c "import torch, triton, numpy, safetensors; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"

RUN=$WORK/run MODEL=assets/overworld/model.safetensors
if [ "$TRAIN" = 1 ]; then
  if ! python3 -c "import gymnasium" 2>/dev/null; then
    echo "error: gymnasium is not installed here (the games are Gymnasium envs): carry its wheel in .whl" \
      "(docs/training.md, \"Continuing, and a GPU lease\")"
    exit 1
  fi
  # The training data, recorded on the CPU cores: long explore walks (idle stretches, blocked moves, turns)
  # and random keys held 1-15 frames, so that what is pressed and how the world moves are not the same
  # signal. Then the whole pipeline, every stage time-boxed, continuing from what the last lease shipped:
  # its teacher and student when assets/overworld has a teacher (INIT=overworld), else the last lease's
  # teacher whose students were not shipped (assets/overworld/lease-teacher.safetensors: the teacher goes
  # on, the students start from its copy), else the autoencoder trained on a CPU
  # (assets/overworld/autoencoder.safetensors), else from scratch (INIT=none).
  DATA=$WORK/data
  $WM record --game overworld --agent "$EXPLORE" --episodes $EPISODES --steps $STEPS_PER --workers $WORKERS \
    --seed 0 --out "$DATA" --quiet
  $WM record --game overworld --agent random --episodes $((EPISODES / 2)) --steps $STEPS_PER --workers $WORKERS \
    --seed 0 --out "$DATA" --quiet
  if [ -z "${INIT:-}" ]; then
    if [ -f assets/overworld/teacher.safetensors ]; then INIT=overworld
    elif [ -f assets/overworld/lease-teacher.safetensors ]; then INIT=assets/overworld/lease-teacher.safetensors
    elif [ -f assets/overworld/autoencoder.safetensors ]; then INIT=assets/overworld/autoencoder.safetensors
    else INIT=none; fi
  fi
  INIT_ARGS=()
  [ "$INIT" != none ] && INIT_ARGS=(--init "$INIT")
  # a world to continue keeps its autoencoder (its teacher and student read its latents); an
  # autoencoder alone, or none, is trained further within the ae stage's minutes
  if [ "$INIT" = none ] || [[ "$INIT" == *autoencoder.safetensors ]]; then AE_STEPS=100000; else AE_STEPS=0; fi
  TEACHER_STEPS=100000
  [ "$KEPT" = 1 ] && TEACHER_STEPS=0
  STAGE_STEPS=ae=$AE_STEPS,teacher=$TEACHER_STEPS,student=100000,ode=100000,self-forcing=100000
  # the ar stage runs to its minutes when it has some, else its default steps
  [[ ",$MINUTES" == *",ar="* ]] && STAGE_STEPS+=,ar=100000
  RECIPE=(--context-aug "$CONTEXT_AUG" --rollout-frames "$ROLLOUT_FRAMES")
  [ "$ODE_TEACHER" = ar ] && RECIPE+=(--ode-teacher ar)
  [ -n "$IDLE_ROLLOUTS" ] && RECIPE+=(--idle-rollouts "$IDLE_ROLLOUTS")
  [ -n "$ROLLOUT_ENGINE" ] && RECIPE+=(--rollout-engine "$ROLLOUT_ENGINE")
  [ -n "$STOP_WEIGHT" ] && RECIPE+=(--stop-weight "$STOP_WEIGHT")
  [ -n "$ROLLOUT_STOP_WEIGHT" ] && RECIPE+=(--rollout-stop-weight "$ROLLOUT_STOP_WEIGHT")
  [ -n "$STOP_GUIDANCE" ] && RECIPE+=(--stop-guidance "$STOP_GUIDANCE")
  [ -n "$ODE_STOP_GUIDANCE" ] && RECIPE+=(--ode-stop-guidance "$ODE_STOP_GUIDANCE")
  [ -n "$ODE_IDLE_GUIDANCE" ] && RECIPE+=(--ode-idle-guidance "$ODE_IDLE_GUIDANCE")
  [ -n "$CONTEXT_NOISE_IDLE" ] && RECIPE+=(--context-noise-idle "$CONTEXT_NOISE_IDLE")
  [ -n "$SINK_NOISE" ] && RECIPE+=(--sink-noise "$SINK_NOISE")
  [ "$SNAPSHOTS" != 0 ] && RECIPE+=(--snapshots "$SNAPSHOTS")
  [ -n "$LR" ] && RECIPE+=(--stage-lr "$LR")
  [ -n "$EXTRA" ] && read -r -a MORE <<< "$EXTRA" && RECIPE+=("${MORE[@]}")
  [ -n "$STUDENT_SHAPE" ] && RECIPE+=(--student-shape "$STUDENT_SHAPE")
  [ -n "$TEACHER_SHAPE" ] && RECIPE+=(--teacher-shape "$TEACHER_SHAPE")
  # each stage's batch doubled while a step costs little more (a few seconds of trial out of its minutes)
  [ "$GROW_BATCH" = 1 ] && RECIPE+=(--grow-batch)
  TRAIN_CMD="worldmodel train all --data D --out RUN --preset tiny --device $DEV ${INIT_ARGS[*]} ${RECIPE[*]} \
--stage-minutes $MINUTES --stage-steps $STAGE_STEPS --stage-batch $BATCH"
  echo "training: $TRAIN_CMD"
  step train "$TRAIN_LIMIT" $WM train all --data "$DATA" --out "$RUN" --preset tiny --device $DEV \
    "${INIT_ARGS[@]}" "${RECIPE[@]}" --stage-minutes $MINUTES --stage-steps $STAGE_STEPS \
    --stage-batch $BATCH --log-every 25 --ckpt-every 100000 --eval-every 1000 \
    --ladder-frames $LADDER_FRAMES --ladder-long-frames $LADDER_LONG --quiet
  python3 -m worldmodel.train.report "$RUN" --out "$RUN/report" --name tiny-gpu --command "$TRAIN_CMD" || true
  [ -f "$RUN/model.safetensors" ] && MODEL=$RUN/model.safetensors
fi

# 1. the kernel's tests, compiled for this GPU (on the CPU they run under the interpreter)
[ "$SMOKE" = 1 ] || ! wanted tests || step kernel-tests 160 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernel.py

# 2. the fused kernel vs the unfused paths (issue: Triton kernel)
! wanted bench || step bench 120 python3 -m kernels.bench --dtype bf16 "${BENCH[@]}" --out "$B"

# 3. end-to-end latency: first a check that the compiled and triton backends draw eager's frames (a
# stale graph would not), then the sf-1.3b shape (eager, triton, compiled; then compiled with the
# fused kernel for attention instead of its default there, SDPA), the shipped model with every
# backend (then compiled with SDPA instead of its default there, the kernel), small, base
if [ -f "$MODEL" ]; then SRC=(--checkpoint "$MODEL"); else SRC=(--preset tiny); fi
! wanted check || step check 90 python3 tools/check_backends.py "${SRC[@]}" --device $DEV \
  --backends compiled,triton --frames $CHECK_FRAMES --out "$B/check-backends-$DEV.json"
# (at this size the launches are a small part of a chunk, so the compiled backend's passes skip
# inductor's compile: a graph of the eager ops and the attention)
! wanted profile-big || step profile-$BIG 180 $WM profile --preset $BIG --device $DEV --backend $BIG_BACKENDS \
  --no-inductor --frames $BIG_FRAMES --fill 3 --out "$B/profile-$BIG-$DEV"
# (not in a CPU dry run: the kernel there is the interpreter, minutes for a profile)
[ "$SMOKE" = 1 ] || ! wanted profile-big-kernel || step profile-$BIG-kernel 60 \
  $WM profile --preset $BIG --device $DEV --backend compiled --no-inductor --compiled-attention kernel --frames $BIG_FRAMES --fill 3 --out "$B/profile-$BIG-$DEV-kernel"
! wanted profile-tiny || step profile-tiny 170 $WM profile "${SRC[@]}" --device $DEV --backend $BACKENDS \
  --frames $FRAMES "${FILL[@]}" --out "$B/profile-tiny-$DEV"
! wanted profile-tiny-sdpa || step profile-tiny-sdpa 45 $WM profile "${SRC[@]}" \
  --device $DEV --backend compiled --compiled-attention sdpa --frames $FRAMES "${FILL[@]}" --out "$B/profile-tiny-$DEV-sdpa"
# the compiled backend without its rewrites of the pass (a baseline on the same machine)
! wanted profile-tiny-plain || step profile-tiny-plain 50 $WM profile "${SRC[@]}" \
  --device $DEV --backend compiled --no-rewrites --frames $FRAMES "${FILL[@]}" --out "$B/profile-tiny-$DEV-plain"
# the compiled backend with each chunk's cache pass merged into the next chunk's first pass (off by
# default: slower on a CPU, unmeasured on a GPU, where launches set the tiny model's time)
! wanted profile-tiny-merged || step profile-tiny-merged 50 $WM profile "${SRC[@]}" \
  --device $DEV --backend compiled --merge --frames $FRAMES "${FILL[@]}" --out "$B/profile-tiny-$DEV-merged"
# 4. the kernel's launch configurations at the shapes where they matter, each with and without the
# half turn (kernels/cached_attention.py's half=True: the head's first half turned, nothing spilt)
! wanted sweep || step sweep 80 python3 -m kernels.bench --dtype bf16 "${SWEEP[@]}" --out "$B/sweep"

# 5. small and base, as long as time is left
! wanted profile-small-base || step profile-small-base 150 bash -c "for p in $SB_PRESETS; do $WM profile --preset \$p \
  --device $DEV --backend $SB_BACKENDS --frames $SB_FRAMES --fill $SB_FILL --out $B/profile-\$p-$DEV || exit; done"

# 6. the shipped model's compiled backend with inductor's max-autotune (GEMM templates with fused
# epilogues, timed at the first frame: a longer compile)
! wanted profile-tiny-autotune || step profile-tiny-autotune 110 \
  $WM profile "${SRC[@]}" --device $DEV --backend compiled --compile-mode max-autotune-no-cudagraphs --frames $FRAMES "${FILL[@]}" --out "$B/profile-tiny-$DEV-autotune"

# 7. players per device: N worlds in one batched pass (issue: many players, one device)
! wanted profile-sessions || step profile-sessions 120 $WM profile "${SRC[@]}" --device $DEV \
  --sessions $SESSIONS --frames $FRAMES --out "$B/profile-sessions-$DEV"
# the same on the compiled backend: the rows padded to buckets, a CUDA graph per pass and bucket
! wanted profile-sessions-compiled || step profile-sessions-compiled 150 $WM profile "${SRC[@]}" --device $DEV \
  --sessions $SESSIONS_COMPILED --backend compiled --frames $FRAMES --out "$B/profile-sessions-$DEV-compiled"

# pack up
tar -C "$B" -czf "$OUT/benchmarks.tar.gz" . 2>/dev/null
if [ "$TRAIN" = 1 ] && [ -d "$RUN" ]; then
  (cd "$RUN" && tar -czf "$OUT/run.tar.gz" --exclude='*.safetensors' --exclude=latents --exclude=tb \
    --exclude='state*' .)
  # the weights in one tar cut into 15 MiB parts (a file over 16 MiB does not come back from a lease, and
  # 64 MiB in all): `cat weights.tar.part-* | tar -xf - -C RUN` puts back the teacher and both students
  # (each with its autoencoder), so that the ladder can be run, and the final model saved, on a CPU when
  # the lease's minutes went to training (LADDER_FRAMES=0); the run's model.safetensors is one of the
  # students with start frames added, so it travels only when neither student does
  W=$(cd "$RUN" && ls teacher/model.safetensors ode/model.safetensors self-forcing/model.safetensors 2>/dev/null)
  [[ "$W" == *ode/* || "$W" == *self-forcing/* ]] || W="$W $(cd "$RUN" && ls model.safetensors 2>/dev/null)"
  # the ladder chose a snapshot (SNAPSHOTS): it comes back as the run's model, in the last student's place
  if grep -q '"stage": "self-forcing@' "$RUN/summary.json" 2>/dev/null; then
    W="${W/self-forcing\/model.safetensors/model.safetensors}"
  elif [ "$LADDER_FRAMES" = 0 ]; then
    # no ladder here: the snapshots themselves, as many as fit in 60 MiB with the students; a teacher kept as
    # it ships stays behind (`train all --init overworld --stage-steps ...=0` on a CPU rebuilds it)
    [ "$KEPT" = 1 ] && W="${W/teacher\/model.safetensors/}"
    total=$(cd "$RUN" && cat $W 2>/dev/null | wc -c)
    for snap in $(cd "$RUN" && ls self-forcing/snapshots/step-*/model.safetensors 2>/dev/null | sort); do
      size=$(stat -c %s "$RUN/$snap") || continue
      ((total + size > 60 * 1024 * 1024)) && break
      W="$W $snap" total=$((total + size))
    done
  fi
  (cd "$RUN" && tar -cf - $W) | split -b 15m - "$OUT/weights.tar.part-"
fi
ls -la "$OUT"
echo "== done at $(($(date +%s) - T0))s"
