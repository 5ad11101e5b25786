"""The load benchmark's own arithmetic (benchmarks/serve_load.py is a script, loaded here)."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
serve_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serve_load)


def ask(user: int) -> tuple[str, tuple]:
    return ("recommendations", ("GET", f"/users/{user}/recommendations?k=10", None))


def event(user: int) -> tuple[str, tuple]:
    return ("events", ("POST", "/events", {"user_id": user, "video_id": 1, "watch_ratio": 1.0}))


def test_repeat_share_counts_asks_a_kept_answer_could_serve():
    answered: set[int] = set()
    # 7 asked twice with nothing between (a repeat); 8's event drops its answer (not one).
    first = [ask(7), ask(8), ask(7), event(8), ask(8)]
    assert serve_load.repeat_share(first, answered) == 1 / 4
    assert answered == {7, 8}
    # The set carries over to the next phase of the same server.
    assert serve_load.repeat_share([ask(8), event(7), ask(7), ask(9)], answered) == 1 / 3
    assert serve_load.repeat_share([event(1)], set()) == 0.0


def test_repeat_share_of_the_default_mix_grows_phase_after_phase():
    users, videos = np.arange(7_176), np.arange(10_728)
    answered: set[int] = set()
    shares = [
        serve_load.repeat_share(
            serve_load.mixed_requests(20 * rate, users, videos, 0.2, seed), answered
        )  # fmt: skip
        for seed, rate in enumerate((100, 200, 300))
    ]
    assert shares[0] < shares[1] < shares[2]


def test_distinct_asks_are_scored_while_fresh_users_last():
    users, videos = np.arange(2_000), np.arange(50)
    answered: set[int] = set()
    shares = []
    for seed, n in enumerate((800, 800, 1_500)):
        plan = serve_load.mixed_requests(n, users, videos, 0.2, seed, answered)
        shares.append(serve_load.repeat_share(plan, answered))
    assert shares[:2] == [0.0, 0.0]  # 2,000 users and the events' users cover these asks
    assert 0.0 < shares[2] < 0.5  # then the pool runs dry and the rest are repeats


def test_cpu_seconds_count_children_already_reaped():
    import os
    import subprocess
    import sys

    before = serve_load._cpu_seconds(os.getpid())
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # a backend that came and went
    assert serve_load._cpu_seconds(os.getpid()) - before >= 0.3
