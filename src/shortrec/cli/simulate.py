"""`shortrec simulate RUN`: the run as a feed for every tune or test user."""

from __future__ import annotations

from pathlib import Path

import typer

from shortrec.cli.app import app
from shortrec.cli.options import progress_option, user_errors


@app.command()
def simulate(
    run_dir: Path = typer.Argument(..., help="A run folder (kuairec protocol)."),
    users: str = typer.Option("test", help="tune | test: which small_matrix users."),
    steps: int = typer.Option(50, min=1, help="Views per session at most."),
    slate: int = typer.Option(1, min=1, help="Videos shown per step; the user watches one."),
    seed: int = typer.Option(0, help="Seed of the users' randomness (choices, noise, exits)."),
    outcomes: str = typer.Option(
        "auto",
        help="Watch ratios from: world (a synthetic world's taste model, with noise and "
        "session drift), matrix (small_matrix as observed), auto (world when there is one).",
    ),
    world: Path | None = typer.Option(
        None, help="world.json of the synthetic world (default: found via the data manifest)."
    ),
    weak_streak: int = typer.Option(
        2, min=0, help="Exit after this many weak (disliked) views in a row; 0: never."
    ),
    repeat_run: int = typer.Option(
        6, min=0, help="Exit after this many views in a row of one category; 0: never."
    ),
    leave_probability: float = typer.Option(
        0.01, min=0.0, max=1.0, help="Chance of leaving after any view."
    ),
    position_bias: float = typer.Option(
        0.5, help="Choice model: logit penalty per slate position (slates > 1)."
    ),
    live_events: bool = typer.Option(
        True,
        help="Post each view back to the policy as a live event (--no-live-events: the "
        "policy sees only the big_matrix history; recorded as simulation_<users>-static).",
    ),
    progress: bool = progress_option("Show a progress bar."),
) -> None:
    """Simulate a run as a feed for every tune/test user: watch time, session length, likes."""
    from shortrec.simulation.simulate import (
        SIMULATION_METRICS,
        ChoiceModel,
        ExitModel,
        SimulationConfig,
        simulate_run,
    )

    with user_errors():
        config = SimulationConfig(
            users=users, steps=steps, slate=slate, seed=seed, outcomes=outcomes,
            live_events=live_events, choice=ChoiceModel(position_bias=position_bias),
            exit=ExitModel(weak_streak, repeat_run, leave_probability),
        )  # fmt: skip
        result = simulate_run(run_dir, config, world_file=world, progress=progress)
    intervals = result.intervals()
    typer.echo(
        f"{config.key} ({result.per_user.height} users, watch ratios from {result.outcomes}, "
        f"{result.seconds:.1f} s, steps {result.loop_seconds:.1f} s): "
        + ", ".join(f"{m} {intervals[m]}" for m in SIMULATION_METRICS)
    )
