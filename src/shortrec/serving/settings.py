"""How a server is configured, in one value that can cross into worker processes.

`shortrec serve --workers N` starts N processes that each build their own app; they receive
the run, the store and these settings through one environment variable (JSON), so every
worker is configured exactly like a single-process server.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
ENVIRONMENT_VARIABLE = "SHORTREC_SERVE_SPEC"


@dataclass(frozen=True)
class ServeSettings:
    """Security and capacity settings of one server (see README, "Who can do what")."""

    admin_token: str | None = None  # None or "": the /admin endpoints answer 403
    events_token: str | None = None  # None or "": anyone who reaches the server may post events
    runs_root: str | None = None  # model swaps may only load runs inside it
    trusted_hosts: tuple[str, ...] = LOCAL_HOSTS  # accepted Host headers; "*" accepts any
    max_body_bytes: int = 1 << 20
    scoring_threads: int = 4  # concurrent scorers (more than the cores only adds contention)
    poll_seconds: float = 0.2  # how often a worker reads events other workers stored
    workers: int = 1  # processes behind one port

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if not 0.01 <= self.poll_seconds <= 1.0:
            raise ValueError(f"poll_seconds must be in 0.01 .. 1, got {self.poll_seconds}")
        if self.scoring_threads < 1:
            raise ValueError(f"scoring_threads must be >= 1, got {self.scoring_threads}")


@dataclass(frozen=True)
class ServeSpec:
    """Everything a worker process needs to build the app: run, store and settings."""

    run_dir: str
    db: str | None = None
    settings: ServeSettings = field(default_factory=ServeSettings)
    torch_threads: int = 1  # per request: requests already run in parallel
    swaps_after: int | None = None  # follow model swaps recorded after this id (serving.swaps)

    def to_environment(self) -> None:
        os.environ[ENVIRONMENT_VARIABLE] = json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServeSpec:
        raw = json.loads(os.environ[ENVIRONMENT_VARIABLE])
        settings = raw.pop("settings")
        settings["trusted_hosts"] = tuple(settings["trusted_hosts"])
        return cls(**raw, settings=ServeSettings(**settings))


def default_runs_root(run_dir: str | Path) -> str:
    """The folder holding the served run: swaps may load its sibling runs, nothing else."""
    return str(Path(run_dir).resolve().parent)
