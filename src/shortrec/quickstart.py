"""The main job: synthesise the default world, prepare it, train and evaluate every model,
print the leaderboard and one user's feed. No download; a few minutes on 2 cores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from shortrec.data.labels import LikeRule
from shortrec.models import REGISTRY, model_class
from shortrec.runs import Experiment, Run, RunConfig, load_data, split_for, train_run, training_data

# Baselines first, then every model; models missing from the registry are skipped.
QUICKSTART_MODELS = (
    "random", "popular", "recent-popular", "oracle", "ease", "als", "bpr", "autoencoder",
    "multvae", "sasrec", "two-tower", "linear-regression", "two-stage",
)  # fmt: skip


def quickstart_params(name: str) -> dict:
    """A model's `quickstart` preset (smaller budgets) when it has one, else its defaults."""
    return dict(model_class(name).presets().get("quickstart", {}))


def ensure_world(workdir: Path, scale: str, seed: int, log: Callable[[str], None]) -> Path:
    """Synthesise (once) and prepare (idempotently) the default world; returns the cache."""
    from shortrec.data.prepare import prepare
    from shortrec.data.synth import WORLD_FILE, SynthConfig, synthesize

    raw, prepared = workdir / "raw", workdir / "prepared"
    config = SynthConfig(scale=scale, seed=seed)
    world_file = raw / WORLD_FILE
    if not world_file.exists() or json.loads(world_file.read_text()) != json.loads(
        json.dumps(config.to_dict())
    ):
        synthesize(raw, config, log=log)
    else:
        log(f"synthetic world already in {raw}")
    prepare(raw, prepared, progress=True)
    return prepared


def run_quickstart(
    workdir: Path,
    runs_dir: Path,
    scale: str = "small",
    seed: int = 0,
    models: tuple[str, ...] = QUICKSTART_MODELS,
    like_rule: LikeRule | None = None,
    log: Callable[[str], None] = print,
) -> list[Run]:
    prepared = ensure_world(workdir, scale, seed, log)
    experiment = Experiment(str(prepared), "kuairec", like_rule or LikeRule())
    data = load_data(prepared)
    split = split_for(data, experiment.protocol)
    training = training_data(data, split, experiment.like_rule)
    run_dirs = []
    for name in models:
        if name not in REGISTRY:
            log(f"skipping {name}: not available")
            continue
        log(f"training {name} ...")
        config = RunConfig(
            model=name, experiment=experiment, params=quickstart_params(name), seed=seed
        )
        run_dirs.append(
            train_run(
                config, runs_dir, evaluate_on=("tune", "test"), split=split, training=training
            )
        )
    return run_dirs


def best_run(runs: list[Run]) -> Run | None:
    """The run with the best tune-set NDCG@10 (never chosen on test), reference models (the
    oracle) excluded."""
    scored = [
        (tune["summary"]["ndcg@10"]["mean"], str(run.path), run)
        for run in runs
        if (tune := run.metrics.get("tune")) and not model_class(run.config.model).reference
    ]
    return max(scored)[2] if scored else None


def example_user(run: Run) -> int:
    """The user whose feed the quickstart shows: the first test user."""
    return int(run.split().test["user_id"].min())
