"""Load test of `shortrec serve`: open-loop requests at a fixed rate, latency percentiles.

    python benchmarks/serve_load.py --run runs/<sasrec run>      # start a server for a run
    python benchmarks/serve_load.py --url http://127.0.0.1:8000  # or target a running one
    python benchmarks/serve_load.py --fabricate --model sasrec    # or a random full-size world

Traffic: `--rate` requests/s (default 200) for `--seconds` (default 30, at most `--max-requests`):
80% GET /users/{random user}/recommendations?k=10, 20% POST /events for a random user and
video. Open loop: request i is sent at t0 + i/rate whether or not earlier ones have answered,
and its latency counts from that planned time, so a stalled server cannot hide its queue
(no coordinated omission). The baseline is GET /health at the same rate in the same run: the
floor of the HTTP stack, against which the recommendation latencies are given as ratios.
The server runs with one worker on this machine; the client shares its CPU.
Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

TARGET_P99_MS = 50.0
TARGET_RATE = 200.0


@dataclass
class Phase:
    """Latencies (s) and failures of one kind of request in one phase."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self, elapsed: float) -> dict[str, float]:
        ms = np.asarray(self.latencies) * 1000.0
        done = len(ms)
        if done == 0:
            return {"requests": 0, "errors": len(self.errors)}
        return {
            "requests": done + len(self.errors),
            "errors": len(self.errors),
            "per_second": done / elapsed,
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }


async def _one(client: httpx.AsyncClient, planned: float, request: tuple, phase: Phase) -> None:
    method, path, body = request
    await asyncio.sleep(max(0.0, planned - time.perf_counter()))
    try:
        response = await client.request(method, path, json=body)
        if response.status_code >= 400:
            phase.errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return
    except httpx.HTTPError as error:
        phase.errors.append(f"{method} {path}: {type(error).__name__} {error}")
        return
    phase.latencies.append(time.perf_counter() - planned)


async def drive(
    url: str, requests: list[tuple[str, tuple]], rate: float, timeout: float
) -> tuple[dict[str, Phase], float]:
    """Send `requests` ((kind, (method, path, body))) open-loop at `rate` per second."""
    phases: dict[str, Phase] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        start = time.perf_counter() + 0.05
        tasks = [
            asyncio.ensure_future(
                _one(client, start + i / rate, request, phases.setdefault(kind, Phase()))
            )
            for i, (kind, request) in enumerate(requests)
        ]
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return phases, elapsed


def mixed_requests(
    n: int, user_ids: np.ndarray, video_ids: np.ndarray, event_share: float, seed: int
) -> list[tuple[str, tuple]]:
    rng = np.random.default_rng(seed)
    is_event = rng.random(n) < event_share
    users = rng.choice(user_ids, n).tolist()
    videos = rng.choice(video_ids, n).tolist()
    ratios = rng.gamma(2.0, 0.45, n).round(3).tolist()
    return [
        ("events", ("POST", "/events", {"user_id": u, "video_id": v, "watch_ratio": r}))
        if event
        else ("recommendations", ("GET", f"/users/{u}/recommendations?k=10", None))
        for event, u, v, r in zip(is_event.tolist(), users, videos, ratios, strict=True)
    ]


# --- the server under test ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run_dir: Path, db: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "shortrec.cli", "serve", "--run", str(run_dir),
               "--db", db, "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not answer /health within 600 s")


def fabricate(root: Path, model_name: str, views_per_user: int) -> Path:
    """A random full-size world (7,176 users x 10,728 videos) and a run of `model_name`."""
    from shortrec.serving.demo import fabricate_release, fabricate_run

    started = time.perf_counter()
    data_dir = fabricate_release(root / "data", n_users=7_176, n_videos=10_728,
                                 views_per_user=views_per_user)  # fmt: skip
    model = None
    if model_name == "sasrec":
        from shortrec.models.sasrec import SASRec

        # One epoch: the weights are poor but scoring costs exactly what a trained model's does.
        model = SASRec(epochs=1, eval_every=1, device="cpu")
    run_dir = fabricate_run(root / "run", data_dir, model)
    print(
        f"fabricated world + {model_name} run in {time.perf_counter() - started:.0f} s: {run_dir}"
    )
    return run_dir


def _server_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--run", type=Path, help="start `shortrec serve --run RUN` on 127.0.0.1")
    target.add_argument("--fabricate", action="store_true",
                        help="fabricate a random full-size world and run (default)")  # fmt: skip
    parser.add_argument("--model", default="sasrec", choices=("sasrec", "popular"),
                        help="model of the fabricated run")  # fmt: skip
    parser.add_argument("--views-per-user", type=int, default=1_742,
                        help="fabricated views per user (big_matrix: 12.5M / 7,176)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the mixed phase")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--event-share", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.max_requests < 1:
        parser.error("--rate, --seconds and --max-requests must be positive")

    workdir = Path(tempfile.mkdtemp(prefix="shortrec-load-"))
    process = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            run_dir = args.run or fabricate(workdir, args.model, args.views_per_user)
            process, url = start_server(run_dir, f"sqlite:///{workdir}/events.db")
        health = httpx.get(f"{url}/health", timeout=10).json()
        user_ids = np.asarray(httpx.get(f"{url}/users?limit=100000", timeout=30).json()["user_ids"])
        video_ids = np.asarray(
            httpx.get(f"{url}/videos?limit=100000", timeout=30).json()["video_ids"]
        )
        print(
            f"server {url}: model {health['model']['name']}, {len(user_ids)} users, "
            f"{len(video_ids)} videos, store {health['store']}; client pid {os.getpid()}"
        )

        def requests_for(seconds: float, seed: int) -> list:
            n = max(1, min(args.max_requests, int(args.rate * seconds)))
            return mixed_requests(n, user_ids, video_ids, args.event_share, seed)

        asyncio.run(drive(url, requests_for(args.warmup_seconds, args.seed + 1), args.rate,
                          args.timeout))  # fmt: skip
        n_base = max(1, int(args.rate * args.baseline_seconds))
        baseline, base_elapsed = asyncio.run(
            drive(url, [("health", ("GET", "/health", None))] * n_base, args.rate, args.timeout)
        )
        cpu_before = _server_cpu(process.pid if process else None)
        phases, elapsed = asyncio.run(
            drive(url, requests_for(args.seconds, args.seed), args.rate, args.timeout)
        )
        cpu_after = _server_cpu(process.pid if process else None)
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    results = {
        "model": health["model"]["name"],
        "users": len(user_ids),
        "videos": len(video_ids),
        "target_rate": args.rate,
        "baseline_health": baseline["health"].summary(base_elapsed),
        **{kind: phase.summary(elapsed) for kind, phase in phases.items()},
    }
    total_done = sum(len(p.latencies) for p in phases.values())
    total_errors = sum(len(p.errors) for p in phases.values())
    results["achieved_per_second"] = total_done / elapsed
    if cpu_before is not None:
        results["server_cpu_cores"] = (cpu_after - cpu_before) / elapsed
    rec, base = results.get("recommendations", {}), results["baseline_health"]
    columns = ("requests", "errors", "per_second", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    print("\n" + f"{'kind':<16}" + "".join(f"{name:>11}" for name in columns))
    for kind in ("baseline_health", "recommendations", "events"):
        row = results.get(kind)
        if row and row.get("requests"):
            cells = (row.get(name, float("nan")) for name in columns)
            print(f"{kind:<16}" + "".join(f"{cell:>11.2f}" for cell in cells))
    print(f"\nmixed phase: {results['achieved_per_second']:.1f} req/s achieved "
          f"(target {args.rate:g}) over {elapsed:.1f} s, {total_errors} errors")  # fmt: skip
    if "server_cpu_cores" in results:
        print(f"server CPU: {results['server_cpu_cores']:.2f} cores on average")
    if rec.get("p50_ms") and base.get("p50_ms"):
        results["ratio_p50_vs_health"] = rec["p50_ms"] / base["p50_ms"]
        results["ratio_p99_vs_health"] = rec["p99_ms"] / base["p99_ms"]
        print(f"recommendations vs /health baseline: p50 x{results['ratio_p50_vs_health']:.1f}, "
              f"p99 x{results['ratio_p99_vs_health']:.1f}")  # fmt: skip
    met = (
        total_errors == 0
        and rec.get("p99_ms", float("inf")) < TARGET_P99_MS
        and results["achieved_per_second"] >= 0.97 * min(args.rate, TARGET_RATE)
        and args.rate >= TARGET_RATE
    )
    results["target_met"] = met
    print(f"target (p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:g} req/s, no errors): "
          f"{'MET' if met else 'NOT MET'}")  # fmt: skip
    for phase in phases.values():
        for error in phase.errors[:5]:
            print(f"  error: {error}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
