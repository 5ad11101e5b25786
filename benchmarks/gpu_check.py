"""The GPU path, checked: every GPU-capable model trained on CUDA and on the CPU, side by side.

On the full-scale world (KuaiRec protocol, seed 0), each model in `--models` whose class
lists "cuda" among its `devices` is trained twice with its defaults - once with
`device=cpu`, once with `device=cuda` (SASRec also with bfloat16 autocast, `amp`) - and
opened on test. The GPU run passes when its test NDCG@10 lies inside the CPU run's 95%
interval (the same code, so only floating point and random draws differ). Epoch times come
from each model's fit report. A model that cannot train on CUDA (the two-tower today) is
listed as skipped, with the reason.

Nothing here runs without CUDA: the script exits with status 2 and says so. Reuse CPU runs
from an earlier check with `--cpu-runs RUNS_DIR` (the newest run per label is taken).

    python benchmarks/gpu_check.py                       # synthesises data/full if missing
    python benchmarks/gpu_check.py --models sasrec,als --data data/full/prepared
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MODELS = ("sasrec", "autoencoder", "multvae", "two-tower", "als")


def variants(name: str) -> list[tuple[str, dict]]:
    """(label suffix, extra params) of each GPU run of `name`."""
    if name == "sasrec":
        return [("fp32", {}), ("bf16", {"amp": True})]
    return [("fp32", {})]


def newest_run(runs_dir: Path, label: str):
    """The newest run under `runs_dir` whose config carries `label`."""
    from shortrec.runs import list_runs

    found = [run for run in list_runs(runs_dir) if run.config.label == label]
    return found[-1] if found else None  # run folder names start with the time


def summary(run) -> dict:
    metrics = run.metrics
    history = metrics.get("fit", {}).get("history", [])
    seconds = [r["seconds"] for r in history if "seconds" in r]
    return {
        "ndcg": metrics["test"]["summary"]["ndcg@10"],
        "train_seconds": metrics["train_seconds"],
        "epoch_seconds": sorted(seconds)[len(seconds) // 2] if seconds else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/full/prepared"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--cpu-runs", type=Path, help="reuse CPU runs from this folder")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device here; this check only runs on a machine with a GPU",
              file=sys.stderr)  # fmt: skip
        return 2

    from shortrec.data.labels import LikeRule
    from shortrec.models import model_class
    from shortrec.quickstart import ensure_world
    from shortrec.runs import RunConfig, load_data, split_for, train_run, training_data

    if not (args.data / "manifest.json").exists():
        args.data = ensure_world(args.data.parent, "full", 0, print)
    data = load_data(args.data)
    split = split_for(data, "kuairec")
    training = training_data(data, split, LikeRule())
    print(f"GPU: {torch.cuda.get_device_name()}; data {args.data}; torch {torch.__version__}")

    def run(name: str, label: str, params: dict):
        config = RunConfig.build(name, str(args.data), params, label=label)
        return train_run(config, args.runs_dir, evaluate_on=("test",), data=data, split=split,
                         training=training, progress=True)  # fmt: skip

    failures = 0
    rows = []
    for name in args.models.split(","):
        cls = model_class(name)
        if "cuda" not in cls.devices:
            rows.append(f"{name:24s} skipped: trains on the CPU only (devices {cls.devices})")
            continue
        cpu_label = f"{name}-cpu"
        cpu_run = newest_run(args.cpu_runs, cpu_label) if args.cpu_runs else None
        cpu_run = cpu_run or run(name, cpu_label, {"device": "cpu"})
        cpu = summary(cpu_run)
        rows.append(
            f"{cpu_label:24s} test NDCG@10 {cpu['ndcg']['mean']:.4f} "
            f"[{cpu['ndcg']['low']:.4f}, {cpu['ndcg']['high']:.4f}], epoch "
            f"{cpu['epoch_seconds'] or float('nan'):.2f} s, train {cpu['train_seconds']:.1f} s"
        )
        for suffix, extra in variants(name):
            gpu = summary(run(name, f"{name}-cuda-{suffix}", {"device": "cuda", **extra}))
            inside = cpu["ndcg"]["low"] <= gpu["ndcg"]["mean"] <= cpu["ndcg"]["high"]
            failures += not inside
            rows.append(
                f"{name + '-cuda-' + suffix:24s} test NDCG@10 {gpu['ndcg']['mean']:.4f} "
                f"({'inside' if inside else 'OUTSIDE'} the CPU interval), epoch "
                f"{gpu['epoch_seconds'] or float('nan'):.2f} s, train "
                f"{gpu['train_seconds']:.1f} s"
            )
    print("\n".join(rows))
    print("all GPU runs match their CPU runs" if not failures else f"{failures} GPU run(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
