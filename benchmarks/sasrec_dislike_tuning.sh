#!/usr/bin/env bash
# SASRec's default objective, chosen on tune sets only (seed-0 worlds; test never opened):
# every view a positive vs disliked views as explicit negatives of weight 1, 3, 6, 10, 20,
# and the random vs newest training window. README "SASRec defaults" shows the table.
#
#   bash benchmarks/sasrec_dislike_tuning.sh          # small world ~10 min, full ~40 min on 2 cores
#   shortrec leaderboard --runs-dir runs/sasrec-tuning-small --on tune
set -euo pipefail
for scale in small full; do
  DATA=data/$scale/prepared
  if [ ! -f "$DATA/manifest.json" ]; then
    shortrec data synth --out data/$scale/raw --scale $scale --seed 0 --no-progress
    shortrec data prepare data/$scale/raw --out "$DATA" --no-progress
  fi
  train() { shortrec train sasrec --data "$DATA" --runs-dir runs/sasrec-tuning-$scale --no-progress "$@"; }
  if [ "$scale" = small ]; then
    train --no-explicit-negatives --weighted-dislike 1 --label views-as-positives
    train --weighted-dislike 1 --label dislike-1
    train --weighted-dislike 3 --train-window last --label dislike-3-last
  fi
  for weight in 3 6 10 20; do
    train --weighted-dislike $weight --label dislike-$weight
  done
done
