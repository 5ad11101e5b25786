"""The `shortrec` command, one module per area; each command is a thin shell over a library
function (the options it declares, the call, what it prints).

    app.py       the root command and the `data` group
    options.py   options shared by several commands (--data, --runs-dir, --like-rule, ...),
                 `fail` and the user-error guard
    data.py      data download / prepare / import / export / report / synth / calibrate
    train.py     train MODEL, evaluate, recommend, leaderboard, compare, quickstart
    serve.py     serve
    simulate.py  simulate
    tune.py      tune, benchmark
    report.py    report
"""

# Importing an area registers its commands; `--help` lists them in this order.
# isort: off
from shortrec.cli import data, train, simulate, serve, tune, report  # noqa: F401

# isort: on
from shortrec.cli.app import app
from shortrec.cli.options import fail

__all__ = ["app", "fail"]
