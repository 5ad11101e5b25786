"""How much of a run's ranking is personal: NDCG@10 of its raw tune scores, of the scores minus
their per-video mean across users (what is left once everyone's common list is removed), and of
the per-video mean alone; plus the share of score variance that is common to all users.

    python benchmarks/sasrec_personalisation.py RUN_DIR [--common-weights 0.1,0.25,0.5]

A model that ranks everyone the same scores like its per-video mean, and its centred scores
rank at random (issue 18's diagnosis of SASRec on the KuaiRec protocol).
"""

from __future__ import annotations

import argparse

import numpy as np

from shortrec.data.histories import IdMap
from shortrec.evaluation.metrics import full_ranking_metrics
from shortrec.runs import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (any model)")
    parser.add_argument("--on", default="tune", choices=("tune", "test"))
    parser.add_argument(
        "--common-weights",
        default="",
        help="also rank the scores with their per-video mean scaled by each of these weights "
        "(comma-separated; 1: raw, 0: centred); a weight picked here is picked on the same "
        "users, so its NDCG@10 is an upper bound",
    )
    args = parser.parse_args()
    run = Run(args.run)
    model, split = run.model(), run.split()
    rule = model.like_rule_ if hasattr(model, "like_rule_") else None
    if rule is None:
        from shortrec.data.labels import LikeRule

        rule = LikeRule().fit(split.train)
    targets, _ = split.targets(args.on)
    targets = rule.label(targets)
    histories = split.histories(args.on)
    candidates = IdMap(np.asarray(split.candidate_video_ids, dtype=np.int64))
    users = IdMap.from_ids(targets["user_id"])
    scores = model.score(users.raw_ids, candidates.raw_ids, histories).astype(np.float64)
    seen = histories.seen_matrix(users.raw_ids, candidates).toarray() > 0
    relevant = np.zeros(scores.shape, bool)
    relevant[users.index(targets["user_id"]), candidates.index(targets["video_id"])] = targets[
        "liked"
    ].to_numpy()
    relevant[seen] = False

    def ndcg(values: np.ndarray) -> float:
        values = values.copy()
        values[seen] = -np.inf
        return float(full_ranking_metrics(values, relevant, None, ks=(10,))[0]["ndcg@10"].mean())

    common = scores.mean(axis=0)
    print(f"users {len(scores)}, candidates {scores.shape[1]}")
    print(f"ndcg@10 raw {ndcg(scores):.4f}, centred {ndcg(scores - common):.4f}, "
          f"per-video mean alone {ndcg(np.tile(common, (len(scores), 1))):.4f}")  # fmt: skip
    print(f"share of score variance common to all users {common.var() / scores.var():.4f}")
    for weight in (float(w) for w in args.common_weights.split(",") if w.strip()):
        print(f"ndcg@10 with the per-video mean x {weight:g}: "
              f"{ndcg(scores - (1 - weight) * common):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
