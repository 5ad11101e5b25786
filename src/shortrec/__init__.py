"""shortrec: honest, fast short-video recommenders on KuaiRec 2.0.

From Python (`shortrec.api`; the same code the `shortrec` command runs):

    import shortrec as sr
    data = sr.synth(scale="small", seed=0)
    run = sr.train("ease", data, l2=1300, runs_dir="runs", test=True)
    sr.leaderboard("runs", on="test")
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "__version__", "Dataset", "Run", "benchmark", "compare", "export_recbole", "import_log",
    "leaderboard", "list_runs", "load", "open_run", "simulate", "synth", "train", "tune",
]  # fmt: skip
_API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from shortrec.api import (
        Dataset,
        Run,
        benchmark,
        compare,
        export_recbole,
        import_log,
        leaderboard,
        list_runs,
        load,
        open_run,
        simulate,
        synth,
        train,
        tune,
    )


def __getattr__(name: str):
    # The API loads on first use, so `import shortrec` (and the CLI) stays fast.
    if name in _API:
        from shortrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'shortrec' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Importing the submodules `shortrec.leaderboard` / `shortrec.benchmark` would bind them
    over the functions `sr.leaderboard` / `sr.benchmark`; API names stay the API's (the
    submodules are in sys.modules as usual: `from shortrec.benchmark import ...` works)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
