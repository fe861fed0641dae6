#!/usr/bin/env bash
# The one-call GPU check (issue 27), for a session that is lent a GPU machine.
#
#   here:   make gpu-prep     wheels -> .whl/, CIFAR-10 JPEGs + 500 photos -> .gpu/ (sizes checked)
#   there:  the device tool's run(command="bash benchmarks/gpu_check.sh",
#                                 carry=[".whl", ".gpu"], timeout_s=600)
#   here:   make gpu-dryrun   the same script with --device cpu in a fresh venv, offline install
#
# That machine has Python 3.12 and its own torch (CUDA), reaches no package registry, and
# gets only the working tree plus the carried paths. In order, each step's output goes to
# its own file under $OUT as it runs (a step cut off by its limit still leaves its lines):
#   00-setup.txt            machine, versions, unpacking, the offline install of .whl/;
#                           at its end the summary: each step's exit code and seconds
#   01-tests.txt            the CUDA-only tests (skipped on a CPU), pytest -x
#   02-bench-c10-eager.txt  simsiam bench, cifar10 preset (CIFAR-stem ResNet-18, batch 512,
#   03-bench-c10-compiled.txt   32 px; 50,000 synthetic images) eager, then train.compile true
#   04-bench-r50-synth.txt  the imagenet preset's model (ResNet-50, 224 px), synthetic images
#   05-bench-r50-stream.txt the same fed by data.pipeline stream from the carried photos
#   06-c10-run.txt          the CIFAR-10 recipe (configs/cifar10.yaml, 800-epoch schedule) on
#   07-c10-metrics.jsonl    the real JPEGs until its wall budget ends it with SIGTERM (the
#                           trainer saves and stops); kNN every 10 epochs on the 10,000 test
#                           images; the run's metrics.jsonl, and a kNN / s-per-epoch summary
# Not tried: DALI (data.pipeline dali: its wheel is far over the 64 MiB that travels) and
# torchrun / NCCL (a 2-process run needs 2 GPUs; the machine has one).
#
# Options (or environment variables):
#   --device cpu|cuda   GPU_CHECK_DEVICE (cuda). cpu: the dry run here: 1 epoch on 200
#                       images, tiny bench sizes, no time budget to speak of
#   OUT                 output folder (the device machine sets it; here runs/gpu-check-cpu)
#   PYTHON              the interpreter (python3: the machine's, with its torch; never
#                       install another torch there)
#   GPU_CHECK_WORK      unpacked data, installed wheels, caches, runs (/tmp/simsiam-gpu-check)
#   GPU_CHECK_BUDGET_S  wall seconds for the whole script (480 on cuda); the CIFAR run gets
#                       what is left of it, at most GPU_CHECK_TRAIN_S (300) and at least 60
#   GPU_CHECK_ONLY      step names to run, e.g. "tests bench-c10-compiled" (a rerun); setup
#                       always runs
#   GPU_CHECK_R50_BATCH ResNet-50 bench batch (256: half the preset's 512, for headroom in an
#                       H100's 78 GiB on the one try; not measured yet)
set -uo pipefail  # no -e: a failing step must not stop the later ones

DEVICE=${GPU_CHECK_DEVICE:-cuda}
while (($#)); do
  case $1 in
    --device) DEVICE=${2:-}; shift 2 || { echo "--device needs cpu or cuda" >&2; exit 2; } ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --device cpu|cuda)" >&2; exit 2 ;;
  esac
done
[[ $DEVICE == cpu || $DEVICE == cuda ]] || { echo "--device must be cpu or cuda, not '$DEVICE'" >&2; exit 2; }

cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
WORK=${GPU_CHECK_WORK:-/tmp/simsiam-gpu-check}
ONLY=${GPU_CHECK_ONLY:-}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
if [[ $DEVICE == cpu ]]; then OUT=${OUT:-$REPO/runs/gpu-check-cpu}; else OUT=${OUT:?OUT is unset: the device machine sets it (or pass --device cpu)}; fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SIMSIAM_CACHE_DIR=$WORK/cache
SITE=$WORK/site DATA=$WORK/data
SETUP=$OUT/00-setup.txt
START=$SECONDS
SUMMARY=()

if [[ $DEVICE == cuda ]]; then
  BUDGET=${GPU_CHECK_BUDGET_S:-480} TRAIN_S=${GPU_CHECK_TRAIN_S:-300} COPIES=8
  R50_BATCH=${GPU_CHECK_R50_BATCH:-256}
  C10_BENCH=(--synthetic 50000 --steps 20 --windows 5 --warmup 5)
  R50_BENCH=(--batch-size "$R50_BATCH" --steps 5 --windows 3 --warmup 3)
  R50_SYNTH=$((R50_BATCH * 8))
  LIMIT_TESTS=60 LIMIT_EAGER=60 LIMIT_COMPILED=150 LIMIT_R50=75
  TRAIN_ARGS=()  # the preset as it is: 800-epoch schedule, batch 512, kNN every 10 epochs
else
  BUDGET=${GPU_CHECK_BUDGET_S:-3600} TRAIN_S=${GPU_CHECK_TRAIN_S:-600} COPIES=1
  C10_BENCH=(--synthetic 256 --batch-size 32 --steps 2 --windows 2 --warmup 1)
  R50_BENCH=(--batch-size 8 --steps 1 --windows 1 --warmup 1 --set data.num_workers=2)
  R50_SYNTH=32
  LIMIT_TESTS=300 LIMIT_EAGER=300 LIMIT_COMPILED=900 LIMIT_R50=600
  TRAIN_ARGS=(--epochs 1 --per-class 20 --batch-size 32 --set data.test_per_class=10
              --set eval.knn_every=1 --set data.num_workers=2)
fi

log() { echo "$*" | tee -a "$SETUP"; }

# step NAME FILE LIMIT_S COMMAND...: COMMAND under `timeout` (SIGTERM at LIMIT_S, SIGKILL 30 s
# later), its output to $OUT/FILE and to stdout; its exit code and seconds to the summary
# (124: ended by the limit; 137: killed after it).
step() {
  local name=$1 file=$2 limit=$3 t0=$SECONDS rc
  shift 3
  if [[ -n $ONLY && " $ONLY " != *" $name "* ]]; then
    SUMMARY+=("$(printf '%-20s skipped (GPU_CHECK_ONLY)' "$name")"); return 0
  fi
  echo "== $name (limit ${limit}s): $*" | tee "$OUT/$file"
  timeout -s TERM -k 30 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
  rc=${PIPESTATUS[0]}
  SUMMARY+=("$(printf '%-20s rc=%-3s %4d s  %s' "$name" "$rc" $((SECONDS - t0)) "$file")")
  return 0
}

# unpack ARCHIVE DEST: extract once (a marker named by the archive's stamp records it), so a
# rerun skips it
unpack() {
  local marker=$2/.unpacked-${1##*/}-$(head -c 16 "$1.stamp" 2>/dev/null)
  [[ -f $marker ]] && { log "unpack $1: already in $2"; return 0; }
  mkdir -p "$2" && tar -xf "$1" -C "$2" && touch "$marker" && log "unpack $1 -> $2: ok"
}

# ---- setup: machine, data, the carried wheels -------------------------------------------
: >"$SETUP"
t0=$SECONDS
log "gpu_check.sh --device $DEVICE, $(date -u +%FT%TZ), repo $REPO, work $WORK, out $OUT"
log "$(uname -srm); $(nproc) CPUs; $($PY --version 2>&1) at $(command -v "$PY")"
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$SETUP"
fi
$PY -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|timm|numpy|pillow|pyyaml|tqdm|tensorboard|safetensors|matplotlib|scikit-learn|regex|huggingface.hub|pytest|pytest-timeout) ' | tr -s ' ' | paste -sd, | tee -a "$SETUP"
setup_rc=0
for archive in .gpu/cifar10-jpeg.tar.gz .gpu/photos.tar; do
  [[ -f $archive ]] || { log "missing $archive: run 'make gpu-prep' here and carry .gpu"; setup_rc=1; continue; }
  unpack "$archive" "$DATA" || setup_rc=1
done
# the stream bench: every photo linked COPIES times (the same decode work per file), so an
# epoch has enough batches of 256 to keep the 16 workers of the imagenet preset busy
PHOTOS=$DATA/photos-x$COPIES
if [[ -d $DATA/photos && ! -d $PHOTOS ]]; then
  $PY - "$DATA/photos" "$PHOTOS" "$COPIES" <<'EOF' 2>&1 | tee -a "$SETUP"
import os, sys
src, dst, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(dst + ".tmp", exist_ok=True)
names = sorted(n for n in os.listdir(src) if n.endswith(".jpg"))
for k in range(copies):
    for n in names:
        os.link(os.path.join(src, n), os.path.join(dst + ".tmp", f"{k}-{n}"))
os.rename(dst + ".tmp", dst)
print(f"{len(names)} photos x {copies} -> {dst}")
EOF
fi
ls .whl/*.whl >/dev/null 2>&1 || { log "no .whl/*.whl: run 'make gpu-prep' here and carry .whl"; setup_rc=1; }
log "pip install --no-index --no-deps --target $SITE: $(ls .whl | paste -sd' ')"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl 2>&1 | tee -a "$SETUP"
((PIPESTATUS[0] == 0)) || setup_rc=1
export PYTHONPATH=$REPO/src:$SITE
$PY -c "import torch, omegaconf, open_clip, webdataset, simsiam
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
print('omegaconf', omegaconf.__version__, 'open_clip', open_clip.__version__, 'simsiam from', simsiam.__file__)" \
  2>&1 | tee -a "$SETUP"
((PIPESTATUS[0] == 0)) || setup_rc=1
SUMMARY+=("$(printf '%-20s rc=%-3s %4d s  %s' setup "$setup_rc" $((SECONDS - t0)) 00-setup.txt)")

# ---- the steps ----------------------------------------------------------------------------
SIM=("$PY" -m simsiam)
step tests 01-tests.txt "$LIMIT_TESTS" "$PY" -m pytest -x -q -p no:cacheprovider \
  "tests/test_batched_augment.py::test_cuda_views_equal_cpu_views_for_the_same_parameters" \
  "tests/test_dali.py::test_dali_feeds_views_on_the_gpu"
step bench-c10-eager 02-bench-c10-eager.txt "$LIMIT_EAGER" "${SIM[@]}" bench --config cifar10 \
  --device "$DEVICE" --no-progress "${C10_BENCH[@]}"
step bench-c10-compiled 03-bench-c10-compiled.txt "$LIMIT_COMPILED" "${SIM[@]}" bench \
  --config cifar10 --device "$DEVICE" --no-progress "${C10_BENCH[@]}" --set train.compile=true
step bench-r50-synth 04-bench-r50-synth.txt "$LIMIT_R50" "${SIM[@]}" bench --config imagenet \
  --device "$DEVICE" --no-progress --synthetic "$R50_SYNTH" "${R50_BENCH[@]}"
step bench-r50-stream 05-bench-r50-stream.txt "$LIMIT_R50" "${SIM[@]}" bench --config imagenet \
  --device "$DEVICE" --no-progress --data "$PHOTOS" "${R50_BENCH[@]}"

left=$((BUDGET - (SECONDS - START) - 40))  # 40 s: the checkpoint on SIGTERM, the summary
train_s=$((left < TRAIN_S ? left : TRAIN_S))
train_s=$((train_s < 60 ? 60 : train_s))
RUN=$WORK/runs/c10
step c10-run 06-c10-run.txt "$train_s" "${SIM[@]}" pretrain --config cifar10 \
  --data "$DATA/cifar10-jpeg" --out "$RUN" --overwrite --device "$DEVICE" --no-progress \
  "${TRAIN_ARGS[@]}"
if [[ -f $RUN/metrics.jsonl && ( -z $ONLY || " $ONLY " == *" c10-run "* ) ]]; then
  cp "$RUN/metrics.jsonl" "$OUT/07-c10-metrics.jsonl"
  $PY - "$RUN/metrics.jsonl" <<'EOF' 2>&1 | tee -a "$OUT/06-c10-run.txt"
import json, statistics, sys
recs = [json.loads(line) for line in open(sys.argv[1])]
epochs = [r for r in recs if r.get("kind") == "epoch"]
knn = [(r["epoch"], r["knn_top1"]) for r in recs if r.get("kind") == "eval" and "knn_top1" in r]
secs = [r["seconds"] for r in epochs]
print(f"c10-run: {len(epochs)} epochs done; s/epoch median "
      f"{statistics.median(secs) if secs else float('nan'):.2f} (first {secs[0] if secs else float('nan'):.2f}); "
      "kNN top-1 by epoch: " + ", ".join(f"{e}: {v:.2f}%" for e, v in knn))
EOF
fi

log ""
log "summary (gpu_check.sh --device $DEVICE, $((SECONDS - START)) s in all; rc 124: ended by its limit)"
for line in "${SUMMARY[@]}"; do log "  $line"; done
