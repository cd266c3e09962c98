#!/usr/bin/env bash
# The wheels bench/gpu_run.sh installs on the GPU machine (which has no package index), fetched here into bench/wheels/
# (ignored by git; pass it to the device tool's run as carry: ["bench/wheels"]). About 4 MB.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d wheels \
  fastcore==1.14.5 rotary-embedding-torch==0.9.1 embedding-reader==1.8.1 ema-pytorch==0.8.3 pytorch-warmup==0.2.0 \
  dalle2-pytorch==1.15.6 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
ls -l wheels
