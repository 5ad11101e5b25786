#!/usr/bin/env bash
# The README's full-scale leaderboard: every model with its defaults (no flags) on the
# full-scale synthetic world (7,176 users x 10,728 videos, ~12.5M views), KuaiRec protocol,
# default like rule (duration:0.8), test set opened once per run; then the likes-vs-views
# ablation of the models that learn from likes. Fast models first, so a run cut short still
# leaves a useful table.
#
#   bash benchmarks/full_scale_leaderboard.sh
#   shortrec leaderboard --runs-dir runs/full --on test
set -euo pipefail
DATA=data/full/prepared
RUNS=runs/full
if [ ! -f "$DATA/manifest.json" ]; then
  shortrec data synth --out data/full/raw --scale full --seed 0 --no-progress --no-calibration
  shortrec data prepare data/full/raw --out "$DATA" --no-progress
fi
train() { shortrec train "$@" --data "$DATA" --runs-dir "$RUNS" --test --no-progress; }

for model in random popular recent-popular oracle ease als mean-regression linear-regression \
  two-tower sasrec bpr autoencoder multvae two-stage; do
  train "$model"
done
# Ablation: every view a positive (what the models learned before issue 9).
train sasrec --no-explicit-negatives --label sasrec-views
train ease --signal views --label ease-views
train two-tower --positives views --label two-tower-views
