#!/usr/bin/env bash
# The whole two-stage pipeline: VAE -> latent cache -> DiT -> samples -> metrics -> summary.
#
#   bash train.sh                                   # built-in synthetic data, on a CPU (10-13 min on 2 cores: BENCHMARKS.md)
#   bash train.sh ucf101 /data/UCF-101              # benchmark recipe: LeanVAE 4ch + Latte-XL/2, 101 classes
#   bash train.sh sky /data/sky_timelapse           # benchmark recipe: unconditional SkyTimelapse
#
# Re-running resumes: finished stages are skipped, an interrupted stage continues from its last checkpoint; a
# finished stage asked to run with other settings (another EXTRA_DIT, VAE_CONFIG, an edited config file ...) is
# refused, not skipped.
# Environment: RUN (output folder, default runs/<dataset>), ACCELERATE_CONFIG (an accelerate config file for
# the benchmark recipes, e.g. configs/accelerate/deepspeed_zero2.yaml), VAE (a trained or imported VAE folder,
# e.g. a diffusers AutoencoderKL used per frame: skips stage 1), VAE_CONFIG (the VAE recipe, e.g.
# configs/vae/wfvae-default.yaml for WF-VAE, configs/vae/ivvae-default.yaml for IV-VAE, which first trains its
# keyframe image VAE (configs/vae/ivvae-keyframes-default.yaml) to initialise from; default: LeanVAE's), EXTRA_VAE / EXTRA_DIT (more key=value overrides
# for the two trainers), SMOKE=1 (tiny data, DiT and budgets: a one-minute check that every stage runs, not a
# useful model). The run folder's layout is pipelines/common/layout.py's.
set -euo pipefail
cd "$(dirname "$0")"

DATASET=${1:-synthetic}
DATA_ROOT=${2:-}
RUN=${RUN:-runs/$([ "$DATASET" = synthetic ] && echo default || echo "$DATASET")}
mkdir -p "$RUN"
USER_VAE=${VAE:-}
eval "$(python -m pipelines.common.layout "$RUN")"  # KEYFRAME_VAE, VAE_RUN, VAE, LATENTS, MANIFEST, DIT_RUN, ...

case "$DATASET" in
  synthetic)
    LAUNCH=(python)
    VAE_CONFIG=${VAE_CONFIG:-configs/vae/default.yaml}
    DIT_CONFIG=configs/dit/default.yaml
    DATA=()
    # Sampled in bfloat16 where it pays (the DiT trained under bfloat16 autocast): evaluation 77 -> 39 s here with
    # the same accuracy and FVD within 0.1 (BENCHMARKS.md); the benchmark recipes keep the protocol's float32.
    EVAL_PRECISION=(--precision auto --vae-precision auto)
    ;;
  ucf101|sky)
    [ -n "$DATA_ROOT" ] || { echo "usage: bash train.sh $DATASET /path/to/data" >&2; exit 2; }
    [ -e "$DATA_ROOT" ] || { echo "train.sh: data folder not found: $DATA_ROOT" >&2; exit 2; }
    LAUNCH=(accelerate launch ${ACCELERATE_CONFIG:+--config_file "$ACCELERATE_CONFIG"})
    VAE_CONFIG=${VAE_CONFIG:-configs/vae/leanvae-4ch.yaml}
    DIT_CONFIG=configs/dit/latte-xl2-$DATASET.yaml
    DATA=("data.name=$DATASET" "data.root=$DATA_ROOT")
    EVAL_PRECISION=()
    ;;
  *)
    echo "train.sh: unknown data set '$DATASET' (synthetic, ucf101 or sky)" >&2; exit 2 ;;
esac

SMOKE_ARGS=() SMOKE_VAE=() SMOKE_DIT=() SMOKE_CLS=() SMOKE_EVAL=() SMOKE_SAMPLE=()
if [ -n "${SMOKE:-}" ]; then
  SMOKE_ARGS=(data.num_samples=24 data.num_frames=9 data.resolution=16)
  # The config's own VAE (its CPU preset is small enough on 16x16 clips), so a new VAE needs no entry here.
  SMOKE_VAE=(max_steps=3 batch_size=2 val_clips=2 stats_clips=2 checkpoint_every=2)
  SMOKE_DIT=(model.preset=Latte-tiny max_steps=4 batch_size=4 checkpoint_every=2 sample_steps=2)
  SMOKE_CLS=(max_steps=3 batch_size=4 num_samples=24 held_out=8 num_frames=9 clip_frames=9 resolution=16)
  SMOKE_EVAL=(--num-fake 8 --steps 2 --num-frames 9)
  SMOKE_SAMPLE=(--steps 2)
fi

# The clips the latent cache holds (the DiT reads them, and its VAE, from the cache's manifest).
CACHE_DATA=("${DATA[@]}")
case "$DATASET" in
  ucf101) CACHE_DATA+=(data.split=all data.frame_interval=3 data.resolution=256 data.num_frames=17 data.random_flip=true) ;;
  sky) CACHE_DATA+=(data.split=train data.frame_interval=3 data.resolution=256 data.num_frames=17) ;;
esac

# stage NAME DONE_MARKER INPUTS COMMAND...: skipped if it finished (DONE_MARKER there, its time recorded) with the
# same command and config files after the stages it reads ("NAME|NAME"); run if not; refused (exit 2) if it
# finished with another command or an edited config (pipelines/evaluation/report.py's plan).
stage() {
  local name=$1 done_marker=$2 inputs=$3 status=0; shift 3
  python -m pipelines.evaluation.report plan "$RUN" "$name" "$done_marker" "$inputs" "$@" || status=$?
  if [ "$status" -eq 0 ]; then
    echo "== $name: done already ($done_marker)"
    return
  fi
  [ "$status" -eq 10 ] || exit "$status"
  echo "== $name"
  local start=$SECONDS
  "$@"
  python -m pipelines.evaluation.report record "$RUN" "$name" $((SECONDS - start)) "$@"
}

KEYFRAME_STAGE="1/5 train keyframe image VAE (IV-VAE initialisation)" VAE_STAGE="1/5 train VAE"
CACHE_STAGE="2/5 cache latents" DIT_STAGE="3/5 train DiT" CLASSIFIER_STAGE="4/5 train classifier (offline FVD/IS detector)"
KEYFRAMES=() VAE_INPUTS=
if [ -z "$USER_VAE" ] && [ "$(basename "$VAE_CONFIG")" = ivvae-default.yaml ]; then
  stage "$KEYFRAME_STAGE" "$KEYFRAME_VAE/config.json" "" \
    "${LAUNCH[@]}" train_vae.py --config configs/vae/ivvae-keyframes-default.yaml "output_dir=$KEYFRAME_RUN" \
    resume=latest "${DATA[@]}" "${SMOKE_ARGS[@]}" data.num_frames=5 "${SMOKE_VAE[@]}"
  KEYFRAMES=("init_keyframes_from=$KEYFRAME_VAE") VAE_INPUTS=$KEYFRAME_STAGE
fi
if [ -z "$USER_VAE" ]; then
  stage "$VAE_STAGE" "$VAE/config.json" "$VAE_INPUTS" \
    "${LAUNCH[@]}" train_vae.py --config "$VAE_CONFIG" "output_dir=$VAE_RUN" resume=latest "${DATA[@]}" \
    "${KEYFRAMES[@]}" "${SMOKE_ARGS[@]}" "${SMOKE_VAE[@]}" ${EXTRA_VAE:-}
fi
VAE_DIR=${USER_VAE:-$VAE}
stage "$CACHE_STAGE" "$MANIFEST" "$VAE_STAGE" \
  "${LAUNCH[@]}" cache_latents.py "vae=$VAE_DIR" "output_dir=$LATENTS" "${CACHE_DATA[@]}" "${SMOKE_ARGS[@]}"
stage "$DIT_STAGE" "$PIPELINE/model_index.json" "$CACHE_STAGE" \
  "${LAUNCH[@]}" train_dit.py --config "$DIT_CONFIG" "output_dir=$DIT_RUN" "cache_dir=$LATENTS" resume=latest \
  "${SMOKE_DIT[@]}" ${EXTRA_DIT:-}
if [ "$DATASET" = synthetic ]; then
  stage "$CLASSIFIER_STAGE" "$CLASSIFIER/config.json" "" \
    python -m pipelines.training.classifier_trainer --config configs/classifier/default.yaml \
    "output_dir=$CLASSIFIER_RUN" resume=latest "${SMOKE_CLS[@]}"
fi
stage "5/5 sample and evaluate" "$METRICS" "$DIT_STAGE|$CLASSIFIER_STAGE" \
  python evaluate.py --run "$RUN" "${EVAL_PRECISION[@]}" "${SMOKE_EVAL[@]}"

python sample.py --run "$RUN" $([ "$DATASET" = sky ] || echo "--prompt-class 12") --num-videos 4 "${EVAL_PRECISION[@]}" \
  "${SMOKE_SAMPLE[@]}"
python -m pipelines.evaluation.report summary "$RUN"
