#!/bin/sh
# Triton entrypoint: build the TensorRT plan on this GPU when the tensorrt_plan variant is
# chosen (FETALFLEX_MODEL=fetalflex_denoiser_trt), then serve only the chosen model.
set -eu
REPO="${FETALFLEX_REPOSITORY:-/models}"
MODEL="${FETALFLEX_MODEL:-fetalflex_denoiser_onnx}"
export PATH="/usr/src/tensorrt/bin:$PATH"
if [ "$MODEL" = "fetalflex_denoiser_trt" ]; then
  # The repository may be read-only in the image: build into a writable copy.
  if [ ! -w "$REPO/fetalflex_denoiser_trt/1" ]; then
    cp -r "$REPO" /tmp/models && REPO=/tmp/models
  fi
  sh "$REPO/fetalflex_denoiser_trt/build_plan.sh" "$REPO"
fi
exec tritonserver --model-repository="$REPO" --model-control-mode=explicit \
  --load-model="$MODEL" --strict-readiness=true --exit-timeout-secs=30 "$@"
