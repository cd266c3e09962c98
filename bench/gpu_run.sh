#!/usr/bin/env bash
# Every GPU measurement of prior_nbdev in one call of the device tool (an H200 lent for minutes): see bench/GPU_RUN.md.
#
#   bash bench/gpu_run.sh                      # on the GPU machine: results in $OUT, about 8 minutes
#   bash bench/gpu_run.sh --tiny               # here, on a CPU: every part at toy sizes (10-60 s each, mostly start-up)
#   bash bench/gpu_run.sh --parts bench,train  # only some parts (setup always runs)
#   bash bench/gpu_run.sh --budget 470         # seconds for the whole run (default; each part also has its own cap)
#
# Parts, in order: setup (the carried wheels and this tree installed into a private folder), bench (bench_prior.py: ours
# against dalle2-pytorch 1.15.6), train (the training command against its bare step), sample (the sampling command
# against the bare sampling loop), refcompile (torch.compile of the reference's training step, only with time left).
# It writes at most 8 files under $OUT (the device tool brings back no more): summary.txt, log.txt, bench_prior.json,
# profile.txt, train_cli.json, sample_cli.json, reference_compile.json, results.json.
set -u
TINY=0; PARTS=bench,train,sample,refcompile; BUDGET=
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --parts) PARTS="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    *) echo "gpu_run.sh: unknown argument $1 (expected --tiny, --parts LIST, --budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; cd "$ROOT"
# --tiny: a loaded shared CPU is slow to start Python processes, so its parts get three times the GPU's caps
if [ $TINY = 1 ]; then SCALE=3; BUDGET=${BUDGET:-1500}; else SCALE=1; BUDGET=${BUDGET:-470}; fi
PY="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d /tmp/gpu_run_out.XXXXXX)}"; mkdir -p "$OUT"
SCRATCH="$(mktemp -d /tmp/gpu_run_scratch.XXXXXX)"; SITE="$SCRATCH/site"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export TORCH_LOGS="${TORCH_LOGS:-recompiles}"   # a recompilation inside a timed loop would spoil its rate: say so in log.txt
START=$(date +%s)
SUMMARY="$OUT/summary.txt"; LOG="$OUT/log.txt"; : >"$SUMMARY"; : >"$LOG"
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
wants() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# part NAME CAP RESERVE MIN CMD...: run CMD under a limit of min(CAP, time left - RESERVE) seconds (skipped below MIN),
# its output appended to log.txt, its seconds and exit code to summary.txt
part() {
  local name=$1 cap=$(( $2 * SCALE )) reserve=$(( $3 * SCALE )) min=$4; shift 4
  local limit=$(( $(left) - reserve )); [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt "$min" ]; then say "part $name: skipped, ${limit}s of the budget left for it (needs $min)"; return 0; fi
  echo "=== part $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$? took=$(( $(date +%s) - t0 ))
  local what="exit $rc"; [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="stopped at its limit of ${limit}s"
  say "part $name: ${took}s, $what"
}

if [ $TINY = 1 ]; then
  SIZES="tiny"; DEVICE=cpu
  BENCH=(--config tiny --device cpu --compile --train_batches 8 --sample_batch 8 --eager_sample_batches 16 --compile_batches 8
         --compile_sample_batches 16 --compile_sample_scales 1 --compile_backend aot_eager --min_time 0.2 --threads 1)
  REFC=(--config tiny --device cpu --batch 8 --backend aot_eager --min_time 0.2)
  TINYFLAG=(--tiny)
else
  SIZES="seed"; DEVICE=cuda
  # the reference samples at cond_scale 1 only: its cond_scale 2 runs two full passes, half the rate (16.0-16.1 on two runs)
  BENCH=(--config seed --device cuda --cuda_graph --compile --train_batches 256 1024 --compile_batches 256 --sample_batch 256
         --ours_sample_batches 4096 --eager_sample_batches 4096 --compile_sample_batches 4096 --compile_sample_scales 1
         --reference_scales 1 --profile_sample_batch 4096 --min_time 1)
  REFC=(--config seed --device cuda --batch 256)
  TINYFLAG=()
fi

say "gpu_run.sh: $SIZES sizes on $DEVICE; parts $PARTS; budget ${BUDGET}s; out $OUT; $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$SUMMARY"

# setup: the carried wheels (bench/wheels) and this tree into $SITE, first on the path
echo "=== part setup" >>"$LOG"; T0=$(date +%s)
# (one pip call: a second one into the same --target would leave its bin/, the commands, behind). Should building this
# tree fail there, the wheels alone are installed, the tree goes on the path and the two commands become small shims.
{ mkdir -p "$SCRATCH/src" && cp -r prior_nbdev setup.py settings.ini README.md MANIFEST.in LICENSE "$SCRATCH/src/" &&
  rm -rf "$SCRATCH/src/prior_nbdev/__pycache__" &&
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" \
    bench/wheels/*.whl "$SCRATCH/src"
} >>"$LOG" 2>&1
RC=$?
if [ $RC -ne 0 ]; then
  say "setup: installing this tree failed (log.txt); the wheels alone, the tree on the path, shims for the commands"
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" bench/wheels/*.whl >>"$LOG" 2>&1
  RC=$?; mkdir -p "$SITE/bin"; SITE_EXTRA=":$ROOT"
  for cmd in "train_diffusion_prior prior_nbdev.train main" "prior_nbdev_sample prior_nbdev.sample sample_main"; do
    set -- $cmd   # name, module, function (each parser names its own program)
    echo "#!/bin/sh" >"$SITE/bin/$1"
    echo "exec \"$PY\" -c \"import sys; from $2 import $3; sys.exit($3())\" \"\$@\"" >>"$SITE/bin/$1"
    chmod +x "$SITE/bin/$1"
  done
fi
export PYTHONPATH="$SITE${SITE_EXTRA:-}" PATH="$SITE/bin:$PATH"
"$PY" - >>"$LOG" 2>&1 <<'EOF'
import importlib.metadata as md, sys, torch
import prior_nbdev, fastcore, rotary_embedding_torch, embedding_reader, open_clip, ema_pytorch, pytorch_warmup
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; prior_nbdev from {prior_nbdev.__file__}")
print('versions: ' + '; '.join(f'{p} {md.version(p)}' for p in ('accelerate', 'einops', 'numpy', 'huggingface_hub', 'timm',
      'torchvision', 'fastcore', 'open_clip_torch', 'dalle2-pytorch', 'embedding-reader', 'rotary-embedding-torch')))
EOF
RC2=$?
say "part setup: $(( $(date +%s) - T0 ))s, install exit $RC, import check exit $RC2"
grep -E '^(python |versions: )' "$LOG" | tee -a "$SUMMARY"
[ $RC -eq 0 ] && [ $RC2 -eq 0 ] || { say "setup failed: see log.txt"; tail -20 "$LOG"; exit 1; }

# the parts: name, cap, seconds kept for the parts after it, least seconds worth starting
wants bench && part bench 290 100 60 "$PY" bench/bench_prior.py "${BENCH[@]}" --stub_reference_extras --skip_ddpm \
  --json "$OUT/bench_prior.json" --profile "$OUT/profile.txt"
wants train && part train 100 45 40 "$PY" bench/gpu_train_cli.py ${TINYFLAG[@]+"${TINYFLAG[@]}"} --scratch "$SCRATCH" --json "$OUT/train_cli.json"
wants sample && part sample 60 0 30 "$PY" bench/gpu_sample_cli.py ${TINYFLAG[@]+"${TINYFLAG[@]}"} --scratch "$SCRATCH" --json "$OUT/sample_cli.json"
if wants refcompile; then
  L=$(( $(left) - 10 )); [ $L -gt 150 ] && L=150
  if [ $L -ge 60 ]; then
    part refcompile $(( L + 15 )) 0 60 "$PY" bench/gpu_reference_compile.py "${REFC[@]}" --limit $L --json "$OUT/reference_compile.json"
  else say "part refcompile: skipped, ${L}s left (it needs 60)"; fi
fi

"$PY" bench/gpu_summary.py "$OUT" --seconds $(( $(date +%s) - START )) 2>&1 | tee -a "$SUMMARY"
rm -rf "$SCRATCH"
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
