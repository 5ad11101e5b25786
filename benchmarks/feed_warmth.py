"""CPU time of one scored feed answer in a warm process and in one that sleeps between asks.

    python benchmarks/feed_warmth.py --run /tmp/load-world/run   # e.g. serve_load's fabricated run

Loads the run as `shortrec serve` does (`create_app_from_run`, one torch thread), then times
`Feed.recommend` (CPU time of this thread: the scoring, the unwatched filter, the top-k) for
users asked once each (no kept answers), first back to back, then with a sleep after each
ask. Then, back to back for further users, the served model's `score` alone (the model
time of an answer, without the feed's history merge and top-k). A server at 100 req/s
sleeps about 10 ms between asks, so its caches and branch predictors have gone cold (other
processes ran meanwhile) and the same answer costs more CPU than at 300 req/s: the reason
CPU per request in `serve_load.py` falls with the rate even when every ask is scored
(`--distinct-asks`). Each figure is the CPU time of the asking thread and, after the slash,
of the whole process: a helper thread pool that spins between asks (OpenBLAS's does) shows
only in the second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shortrec.serving.app import create_app_from_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder")
    parser.add_argument("--asks", type=int, default=500, help="timed asks per gap")
    parser.add_argument("--gaps-ms", default="0,3,10", help="sleep after each ask, ms")
    args = parser.parse_args()
    gaps = [float(gap) / 1000 for gap in args.gaps_ms.split(",")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app_from_run(args.run, f"sqlite:///{scratch}/events.db")
        feed = app.state.feed
        users = feed.user_ids()
        needed = 50 + args.asks * (len(gaps) + 1)
        if len(users) < needed:
            raise SystemExit(f"{args.run} has {len(users)} users; {needed} needed")
        users = np.random.default_rng(0).choice(users, needed, replace=False).tolist()
        for user in users[:50]:  # first scorings build the model's candidate table
            feed.recommend(user, 10)
        print(f"{feed.served.name}: {len(feed.catalogue_ids):,} videos, "
              "CPU ms per answer (asking thread / process)")  # fmt: skip
        for i, gap in enumerate(gaps):
            asking, process = 0.0, time.process_time()  # the process's: sleeps included
            for user in users[50 + i * args.asks : 50 + (i + 1) * args.asks]:
                started = time.thread_time()
                feed.recommend(user, 10)
                asking += time.thread_time() - started
                if gap:
                    time.sleep(gap)
            spent = (asking, time.process_time() - process)
            print(f"  sleep {gap * 1000:4.0f} ms after each ask: {_ms(spent, args.asks)}")
        model, last = feed.served.model, users[50 + len(gaps) * args.asks :]
        asked = [(user, feed.histories_of(np.array([user]))) for user in last]
        asking, process = 0.0, time.process_time()
        for user, histories in asked:
            started = time.thread_time()
            model.score(np.array([user]), feed.catalogue_ids, histories)
            asking += time.thread_time() - started
        spent = (asking, time.process_time() - process)
        print(f"  the model's score alone, back to back: {_ms(spent, args.asks)}")
        app.state.store.close()


def _ms(spent: tuple[float, float], asks: int) -> str:
    return f"{1000 * spent[0] / asks:.2f} / {1000 * spent[1] / asks:.2f}"


if __name__ == "__main__":
    main()
