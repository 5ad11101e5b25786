"""Load test of `shortrec serve` that measures the server, not the client.

    python benchmarks/serve_load.py --fabricate --world /tmp/load-world   # random full-size world
    python benchmarks/serve_load.py --run runs/<sasrec run>                # a trained run
    python benchmarks/serve_load.py --url http://127.0.0.1:8000            # a running server

Traffic, per rate in `--rates` (default 100, 200, 300 req/s), `--seconds` each (default 20)
after `--warmup-seconds`: 80% GET /users/{random user}/recommendations?k=10, 20% POST /events
for a random user and video. Open loop: request i is sent at t0 + i/rate whether or not earlier
ones have answered, and its latency counts from that planned time, so a stalled server cannot
hide its queue (no coordinated omission).

The client is deliberately light: `--clients` separate processes (default 2), each an asyncio
loop speaking HTTP/1.1 over raw keep-alive sockets (no HTTP library), so the client does not
saturate the CPU before the server does. The server's CPU time (psutil, the server process
and its workers) over each phase is reported per 1,000 requests; so is the client's, to show
how much of the machine it took. `repeats` is the share of a phase's recommendation asks
whose answer the server may still hold (the user asked before, no event since): those cost a
look-up, so later, faster phases of one server are also cheaper per request (an upper bound
with `--workers`, each process keeping its own answers; a lower bound with `--url`).
Every load loop is bounded by `--seconds` and `--max-requests`. Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

TARGET_P99_MS = 50.0
TARGET_RATE = 300.0
MAX_CONNECTIONS_PER_CLIENT = 64


# --- the client: one process, raw sockets -------------------------------------------------------
def _encode(request: tuple[str, str, dict | None], host: str) -> bytes:
    method, path, body = request
    if body is None:
        return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    payload = json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")  # fmt: skip
    return head.encode() + payload


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    """Send one request, read one Content-Length framed response; returns the status."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _drive(host: str, port: int, plan: list, start: float, timeout: float) -> dict:
    """Send `plan` ((offset_s, kind, request)) open-loop from `start` (a wall-clock time)."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    host_header = f"{host}:{port}"

    async def one(planned: float, kind: str, data: bytes) -> None:
        try:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, port)
            status = await asyncio.wait_for(_exchange(reader, writer, data), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            errors.append(f"{kind}: {type(error).__name__} {error}")
            return
        finished = time.time()
        if status >= 400:
            errors.append(f"{kind}: HTTP {status}")
        else:
            latencies.setdefault(kind, []).append(finished - planned)
        if len(idle) < MAX_CONNECTIONS_PER_CLIENT:
            idle.append((reader, writer))
        else:
            writer.close()

    tasks = []
    encoded = [(offset, kind, _encode(request, host_header)) for offset, kind, request in plan]
    for offset, kind, data in encoded:
        planned = start + offset
        delay = planned - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(planned, kind, data)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return {"latencies": latencies, "errors": errors}


def _client_process(args: tuple) -> dict:
    host, port, plan, start, timeout = args
    before = psutil.Process().cpu_times()  # after start-up: only the driving is counted
    result = asyncio.run(_drive(host, port, plan, start, timeout))
    after = psutil.Process().cpu_times()
    result["cpu_seconds"] = after.user + after.system - before.user - before.system
    return result


def run_phase(url: str, requests: list, rate: float, clients: int, timeout: float) -> dict:
    """Send `requests` at `rate` from `clients` processes; latencies (s) by kind, errors and
    the clients' CPU seconds."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    start = time.time() + 1.0  # every client process has started by then
    plans = [[] for _ in range(clients)]
    for i, (kind, request) in enumerate(requests):
        plans[i % clients].append((i / rate, kind, request))
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        results = pool.map(_client_process, [(host, int(port), plan, start, timeout)
                                              for plan in plans])  # fmt: skip
    merged: dict = {"latencies": {}, "errors": [], "client_cpu_seconds": 0.0}
    for result in results:
        for kind, values in result["latencies"].items():
            merged["latencies"].setdefault(kind, []).extend(values)
        merged["errors"].extend(result["errors"])
        merged["client_cpu_seconds"] += result["cpu_seconds"]
    merged["elapsed"] = time.time() - start
    return merged


def mixed_requests(
    n: int,
    user_ids: np.ndarray,
    video_ids: np.ndarray,
    event_share: float,
    seed: int,
    answered: set[int] | None = None,
) -> list[tuple[str, tuple]]:
    """`n` requests in a random order: asks for random users, events of random users on
    random videos. With `answered` (see `repeat_share`), each ask goes to a user without a
    kept answer while there is one, so the server scores every ask: `--distinct-asks`."""
    rng = np.random.default_rng(seed)
    is_event = rng.random(n) < event_share
    users = rng.choice(user_ids, n).tolist()
    videos = rng.choice(video_ids, n).tolist()
    ratios = rng.gamma(2.0, 0.45, n).round(3).tolist()
    if answered is not None:
        kept = set(answered)
        fresh = [int(u) for u in rng.permutation(user_ids) if int(u) not in kept]
        for i, event in enumerate(is_event.tolist()):
            if event:
                kept.discard(users[i])
                fresh.append(users[i])  # asking this user again would be scored
            elif fresh:
                while fresh and fresh[-1] in kept:
                    fresh.pop()
                if fresh:
                    users[i] = fresh.pop()
                kept.add(users[i])
    return [
        ("events", ("POST", "/events", {"user_id": u, "video_id": v, "watch_ratio": r}))
        if event
        else ("recommendations", ("GET", f"/users/{u}/recommendations?k=10", None))
        for event, u, v, r in zip(is_event.tolist(), users, videos, ratios, strict=True)
    ]


def repeat_share(requests: list[tuple[str, tuple]], answered: set[int]) -> float:
    """Share of the recommendation asks in `requests` whose answer the server may already
    hold (`Feed` keeps answers until the user's next event): the user was asked before, on
    this server, with no event of theirs since. `answered` (users with a kept answer) is
    updated in place, phase after phase. A reader of the CPU figures needs it: a repeat
    costs a look-up, not a scoring, so later phases of one server grow cheaper per request."""
    asks = repeats = 0
    for kind, (_, path, body) in requests:
        if kind == "events":
            answered.discard(body["user_id"])
            continue
        user = int(path.split("/")[2])
        asks += 1
        repeats += user in answered
        answered.add(user)
    return repeats / max(asks, 1)


def summary(ms: np.ndarray) -> dict[str, float]:
    if len(ms) == 0:
        return {"requests": 0}
    return {
        "requests": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


# --- the server under test ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    run_dir: Path, db: str, workers: int, src: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`shortrec serve` on 127.0.0.1, from this checkout or from the source tree `src`."""
    port = _free_port()
    command = [sys.executable, "-m", "shortrec.cli", "serve", "--run", str(run_dir),
               "--db", db, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            answered = httpx.get(f"{url}/health", timeout=2).status_code == 200
            if answered and (
                workers == 1 or len(psutil.Process(process.pid).children()) >= workers
            ):
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not answer /health within 600 s")


def fabricate(root: Path, model_name: str, views_per_user: int) -> Path:
    """A random full-size world (7,176 users x 10,728 videos) and a run of `model_name`;
    reused when `root` already holds one."""
    from shortrec.serving.demo import fabricate_release, fabricate_run

    if (root / "run" / "config.json").exists():
        print(f"reusing the fabricated run in {root / 'run'}")
        return root / "run"
    started = time.perf_counter()
    data_dir = fabricate_release(root / "data", n_users=7_176, n_videos=10_728,
                                 views_per_user=views_per_user)  # fmt: skip
    model = None
    if model_name == "sasrec":
        from shortrec.models.sasrec import SASRec

        # One epoch: the weights are poor but scoring costs exactly what a trained model's does.
        model = SASRec(epochs=1, eval_every=1, device="cpu")
    run_dir = fabricate_run(root / "run", data_dir, model)
    print(f"fabricated world + {model_name} run in {time.perf_counter() - started:.0f} s")
    return run_dir


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, all its children (uvicorn workers, PostgreSQL backends) and
    the children it has already reaped (a backend whose connection closed)."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    total = times.children_user + times.children_system
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def measure(url: str, server_pid: int | None, args: argparse.Namespace, label: str) -> list:
    """Every rate of `args.rates` against one server: a row per rate."""
    health = httpx.get(f"{url}/health", timeout=10).json()
    user_ids = np.asarray(httpx.get(f"{url}/users?limit=100000", timeout=30).json()["user_ids"])
    video_ids = np.asarray(httpx.get(f"{url}/videos?limit=100000", timeout=30).json()["video_ids"])
    print(f"{label}: server {url}: model {health['model']['name']}, {len(user_ids)} users, "
          f"{len(video_ids)} videos, {args.workers} worker(s); {args.clients} client "
          f"processes; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows = []
    answered: set[int] = set()  # users whose answer the server may hold (see repeat_share)
    for phase, rate in enumerate(float(rate) for rate in args.rates.split(",")):
        n = max(1, min(args.max_requests, int(rate * args.seconds)))
        warmup = max(1, int(rate * args.warmup_seconds))
        distinct = answered if args.distinct_asks else None
        warmup_requests = mixed_requests(warmup, user_ids, video_ids, args.event_share,
                                         args.seed + 100 + phase, distinct)  # fmt: skip
        repeat_share(warmup_requests, answered)
        run_phase(url, warmup_requests, rate, args.clients, args.timeout)
        requests = mixed_requests(n, user_ids, video_ids, args.event_share, args.seed + phase,
                                  distinct)  # fmt: skip
        repeats = repeat_share(requests, answered)
        cpu_before = _cpu_seconds(server_pid) if server_pid else None
        store_before = _cpu_seconds(args.store_pid) if args.store_pid else None
        measured = run_phase(url, requests, rate, args.clients, args.timeout)
        cpu_after = _cpu_seconds(server_pid) if server_pid else None
        store_after = _cpu_seconds(args.store_pid) if args.store_pid else None
        every = np.concatenate([np.asarray(v) for v in measured["latencies"].values()]
                               or [np.empty(0)]) * 1000.0  # fmt: skip
        done = len(every)
        row = {
            "server": label,
            "rate": rate,
            "achieved_per_second": done / measured["elapsed"],
            "errors": len(measured["errors"]),
            "all": summary(every),
            **{kind: summary(np.asarray(v) * 1000.0)
               for kind, v in measured["latencies"].items()},
            "client_cpu_per_1000": 1000 * measured["client_cpu_seconds"] / max(n, 1),
            "error_examples": measured["errors"][:5],
            "load_average": os.getloadavg()[0],
            "repeat_share": repeats,
        }  # fmt: skip
        if store_before is not None:
            row["store_cpu_per_1000"] = 1000 * (store_after - store_before) / max(done, 1)
        if cpu_before is not None:
            server_cpu = cpu_after - cpu_before
            row["server_cpu_cores"] = server_cpu / measured["elapsed"]
            row["server_cpu_per_1000"] = 1000 * server_cpu / max(done, 1)
        rows.append(row)
    return rows


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--run", type=Path, help="start `shortrec serve --run RUN` on 127.0.0.1")
    target.add_argument("--fabricate", action="store_true",
                        help="fabricate a random full-size world and run (default)")  # fmt: skip
    parser.add_argument(
        "--world",
        type=Path,
        help="folder for the fabricated world, kept and reused (default: temp)",
    )
    parser.add_argument("--server-pid", type=int, help="with --url: the pid to measure CPU of")
    parser.add_argument("--store-pid", type=int,
                        help="also report the CPU of this process and its children per 1,000 "
                        "requests (`db s/1k`), e.g. the PostgreSQL postmaster")  # fmt: skip
    parser.add_argument("--model", default="sasrec", choices=("sasrec", "popular"),
                        help="model of the fabricated run")  # fmt: skip
    parser.add_argument("--views-per-user", type=int, default=1_742,
                        help="fabricated views per user (big_matrix: 12.5M / 7,176)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--db", help="event store of the started servers (default: a fresh "
                        "SQLite file each), e.g. postgresql://user@host/db; '{server}' in "
                        "it is replaced by 'this' or 'baseline'")  # fmt: skip
    parser.add_argument("--baseline-src", type=Path,
                        help="also measure a server run from this source tree (e.g. the src/ "
                        "of an older commit), alternating with this one")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the servers")
    parser.add_argument("--rates", default="100,200,300", help="requests per second, each phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=20_000, help="per phase")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--event-share", type=float, default=0.2)
    parser.add_argument("--distinct-asks", action="store_true",
                        help="ask for users without a kept answer while there are any, so "
                        "every ask is scored (`repeats` says how many were not; 7,176 users "
                        "last one 20 s phase at 300 req/s)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    if min(rates) <= 0 or args.seconds <= 0 or args.max_requests < 1 or args.clients < 1:
        parser.error("--rates, --seconds, --max-requests and --clients must be positive")
    if args.url and args.baseline_src:
        parser.error("--baseline-src starts its own servers: use it without --url")

    workdir = Path(tempfile.mkdtemp(prefix="shortrec-load-"))
    results: dict = {"phases": [], "workers": args.workers,
                     "load_average_before": os.getloadavg()[0]}  # fmt: skip
    try:
        if args.url:
            results["phases"] += measure(args.url.rstrip("/"), args.server_pid, args, "server")
        else:
            run_dir = args.run or fabricate(args.world or workdir, args.model,
                                            args.views_per_user)  # fmt: skip
            servers = [("this", None)]
            if args.baseline_src:
                servers.insert(0, ("baseline", args.baseline_src.resolve()))
            for round_ in range(args.repeat):
                for label, src in servers if round_ % 2 == 0 else servers[::-1]:
                    db = (
                        args.db.format(server=label)
                        if args.db
                        else f"sqlite:///{workdir}/events-{label}-{round_}.db"
                    )
                    process, url = start_server(run_dir, db, args.workers, src)
                    try:
                        results["phases"] += measure(url, process.pid, args, label)
                    finally:
                        stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    header = ("server", "rate", "achieved", "errors", "p50 ms", "p99 ms", "rec p99",
              "event p99", "srv cores", "srv s/1k", "cli s/1k", "load", "repeats",
              "db s/1k")  # fmt: skip
    print("\n" + "".join(f"{name:>10}" for name in header))
    for row in results["phases"]:
        cells = (row["server"], row["rate"], row["achieved_per_second"], row["errors"],
                 row["all"].get("p50_ms", float("nan")), row["all"].get("p99_ms", float("nan")),
                 row.get("recommendations", {}).get("p99_ms", float("nan")),
                 row.get("events", {}).get("p99_ms", float("nan")),
                 row.get("server_cpu_cores", float("nan")),
                 row.get("server_cpu_per_1000", float("nan")), row["client_cpu_per_1000"],
                 row["load_average"], row["repeat_share"],
                 row.get("store_cpu_per_1000", float("nan")))  # fmt: skip
        print("".join(f"{cell:>10.2f}" if isinstance(cell, float) else f"{cell:>10}"
                      for cell in cells))  # fmt: skip
        for error in row["error_examples"]:
            print(f"  error: {error}")
    at_target = [row for row in results["phases"]
                 if row["rate"] >= TARGET_RATE and row["server"] != "baseline"]  # fmt: skip
    met = bool(at_target) and all(
        row["errors"] == 0
        and row["all"].get("p99_ms", float("inf")) < TARGET_P99_MS
        and row["achieved_per_second"] >= 0.97 * row["rate"]
        for row in at_target
    )
    results["target_met"] = met
    print(f"target (p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:g} req/s, no errors): "
          f"{'MET' if met else 'NOT MET'}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    mine = [row for row in results["phases"] if row["server"] != "baseline"]
    return 1 if any(row["errors"] for row in mine) else 0


if __name__ == "__main__":
    sys.exit(main())
