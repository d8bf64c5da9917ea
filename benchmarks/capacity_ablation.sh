#!/usr/bin/env bash
# Module capacity ablation (docs/method.md, "Module capacity"): LAFT-URIEL variants on the quality benchmark's
# PUD POS subset stream, one seed, against full fine-tuning. About 56 min on 2 CPU cores.
#   bash benchmarks/capacity_ablation.sh [SEED]      # default 0; the run goes to runs/ablations/
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
upper='target_modules: [query, key, value, dense], layers: [6, 7, 8, 9, 10, 11]'
exec cml run configs/benchmarks/pud_pos.yaml --set seed="$seed" --set name="pud_pos-subset-capacity-seed$seed" \
  --set output_dir=../../runs/ablations \
  --set "strategies=[
    {method: full_finetune},
    {method: laft_uriel, lora: {r: 8, alpha: 16, $upper}, training: {learning_rate: 3.0e-4}},
    {method: laft_uriel, name: laft_all_layers, lora: {r: 8, alpha: 16, target_modules: [query, key, value, dense]},
     training: {learning_rate: 3.0e-4}},
    {method: laft_uriel, name: laft_r32, lora: {r: 32, alpha: 64, $upper}, training: {learning_rate: 3.0e-4}},
    {method: laft_uriel, name: laft_lr1e3, lora: {r: 8, alpha: 16, $upper}, training: {learning_rate: 1.0e-3}},
    {method: laft_uriel, name: laft_hierarchical, hierarchical: true, lora: {r: 8, alpha: 16, $upper},
     training: {learning_rate: 3.0e-4}}]"
