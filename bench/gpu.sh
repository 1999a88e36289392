#!/usr/bin/env bash
# GPU benchmarks of the paper models, ready to run on a CUDA machine (see README "Performance"):
# BBS and MBS at paper geometry in bf16-mixed with fused SDPA and torch.compile: step time, samples/s,
# MFU (against the GPU's dense bf16 peak, looked up by its name), peak memory, the largest batch that fits,
# FSDP on one GPU, and the loader cores one GPU needs at the measured data-pipeline rate.
# Writes bench/gpu/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
.venv/bin/python -m vatt.bench --gpu --out bench/gpu
