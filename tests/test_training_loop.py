"""The one epoch loop: validation every N epochs, early stopping on NDCG@10 keeping the best
weights, the tuner's hook, and a resume after an interruption that ends exactly where an
uninterrupted run ends (also through a real model, BPR, whose run is killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from fitting import training

from shortrec.training.loop import FitContext, Resume, fit_epochs


class Noisy:
    """A linear model trained on random data from its own streams (numpy, torch generator
    and torch's global generator through dropout), with a scripted validation curve."""

    def __init__(self, curve: list[float]):
        torch.manual_seed(0)
        self.network = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
        self.optimiser = torch.optim.Adam(self.network.parameters(), lr=0.01)
        self.rng = np.random.default_rng(0)
        self.generator = torch.Generator().manual_seed(1)
        self.curve = curve
        self.validated: list[int] = []

    def train_epoch(self, epoch: int) -> dict[str, float]:
        x = torch.from_numpy(self.rng.normal(size=(8, 4)).astype(np.float32))
        x = x + torch.randn(8, 4, generator=self.generator)
        loss = self.network(x).square().mean()
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return {"loss": float(loss.detach())}

    def validate(self, epoch: int) -> float:
        self.validated.append(epoch)
        return self.curve[epoch - 1]

    def fit(self, **kwargs):
        return fit_epochs(
            "noisy", self.network, self.optimiser, self.train_epoch, self.validate,
            generators=[self.rng, self.generator], **kwargs,
        )  # fmt: skip


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_stops_after_patience_validations_and_restores_the_best_epoch():
    curve = [0.1, 0.3, 0.2, 0.25, 0.2, 0.1, 0.9, 0.9]
    best = Noisy(curve)
    best.fit(epochs=2, patience=5)  # the weights after epoch 2, the best one below
    model = Noisy(curve)
    reported = []
    result = model.fit(
        epochs=8, patience=3, context=FitContext(on_epoch_end=lambda e, s: reported.append(e))
    )
    assert model.validated == [1, 2, 3, 4, 5] and reported == [1, 2, 3, 4, 5]
    assert (result.best_epoch, result.best_score, result.epochs) == (2, 0.3, 5)
    assert same_weights(model.network, best.network)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert result.report()["best_validation_ndcg@10"] == 0.3


def test_relative_improvement_rule_stops_on_a_slow_creep_and_not_while_improving():
    creep = [0.3 * (1 + 0.001 * e) for e in range(40)]  # +0.1% per epoch: a plateau
    plain = Noisy(creep).fit(epochs=40, patience=3)
    assert plain.epochs == 40  # every creep counts as better: trains to the budget
    stopped = Noisy(creep).fit(epochs=40, patience=3, min_relative_improvement=0.01)
    assert (stopped.best_epoch, stopped.epochs) == (1, 4)
    rising = [0.1 * 1.05**e for e in range(40)]  # +5% per epoch: still learning
    assert Noisy(rising).fit(epochs=40, patience=3, min_relative_improvement=0.01).epochs == 40


def test_patience_fraction_waits_longer_after_a_late_best():
    early = [0.1, 0.5] + [0.4] * 38  # best at epoch 2: stops after 3 validations
    assert Noisy(early).fit(epochs=40, patience=3, patience_fraction=0.5).epochs == 5
    late = [0.01 * e for e in range(1, 21)] + [0.1] * 20  # best at 20: waits 10 epochs
    result = Noisy(late).fit(epochs=40, patience=3, patience_fraction=0.5)
    assert (result.best_epoch, result.epochs) == (20, 30)
    assert Noisy(late).fit(epochs=40, patience=3).epochs == 23


class ScriptedLoss(Noisy):
    """`Noisy` whose training loss follows a script too."""

    def __init__(self, curve: list[float], losses: list[float]):
        super().__init__(curve)
        self.losses = losses

    def train_epoch(self, epoch: int) -> dict[str, float]:
        super().train_epoch(epoch)
        return {"loss": self.losses[epoch - 1]}


def test_loss_rule_does_not_stop_while_the_loss_still_falls():
    dip = [0.1, 0.11, 0.09, 0.09, 0.09, 0.09] + [0.05 * e for e in range(7, 41)]
    falling = [1.0 * 0.95**e for e in range(40)]  # -5% per epoch: still learning
    plain = ScriptedLoss(dip, falling).fit(epochs=40, patience=3)
    assert (plain.best_epoch, plain.epochs) == (2, 5)  # stopped inside the dip
    patient = ScriptedLoss(dip, falling).fit(epochs=40, patience=3, min_loss_decrease=0.01)
    assert (patient.best_epoch, patient.epochs) == (40, 40)
    flat = [0.7 - 0.001 * e for e in range(40)]  # -0.15% per epoch: converged
    stopped = ScriptedLoss(dip, flat).fit(epochs=40, patience=3, min_loss_decrease=0.01)
    assert (stopped.best_epoch, stopped.epochs) == (2, 5)


def test_a_resumed_fit_applies_its_own_stopping_rules(tmp_path):
    curve = [0.1, 0.5] + [0.4] * 18
    key = Resume({"lr": 0.01})

    def interrupt(epoch, score):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Noisy(curve).fit(epochs=20, patience=3, resume=key,
                         context=FitContext(tmp_path, on_epoch_end=interrupt))  # fmt: skip
    resumed = Noisy(curve).fit(epochs=20, patience=6, resume=key, context=FitContext(tmp_path))
    assert (resumed.start_epoch, resumed.epochs) == (2, 8)


def test_validates_every_n_epochs_and_after_the_last():
    model = Noisy([0.1] * 7)
    result = model.fit(epochs=7, patience=10, validate_every=3)
    assert model.validated == [3, 6, 7]
    assert ["validation_ndcg@10" in r for r in result.history] == [
        False, False, True, False, False, True, True,
    ]  # fmt: skip


def test_without_validation_trains_every_epoch_and_keeps_the_last_weights():
    model = Noisy([])
    result = fit_epochs("noisy", model.network, model.optimiser, model.train_epoch, None,
                        epochs=4, patience=1)  # fmt: skip
    assert result.epochs == 4 and result.best_epoch is None


def test_an_interrupted_fit_resumes_exactly(tmp_path):
    curve = [0.1, 0.2, 0.3, 0.25, 0.5, 0.4, 0.45, 0.6]
    straight = Noisy(curve)
    expected = straight.fit(epochs=8, patience=3)

    def interrupt(epoch, score):
        if epoch == 4:
            raise KeyboardInterrupt

    key = Resume({"lr": 0.01}, {"ids": np.arange(3)})
    with pytest.raises(KeyboardInterrupt):
        Noisy(curve).fit(epochs=8, patience=3, resume=key,
                         context=FitContext(tmp_path, on_epoch_end=interrupt))  # fmt: skip
    with pytest.raises(ValueError, match="other settings"):
        Noisy(curve).fit(epochs=8, patience=3, resume=Resume({"lr": 0.1}, {"ids": np.arange(3)}),
                         context=FitContext(tmp_path))  # fmt: skip
    with pytest.raises(ValueError, match="other data"):
        Noisy(curve).fit(epochs=8, patience=3, resume=Resume({"lr": 0.01}, {"ids": np.arange(4)}),
                         context=FitContext(tmp_path))  # fmt: skip
    resumed = Noisy(curve)  # a fresh process: the same start, then the checkpoint
    result = resumed.fit(epochs=8, patience=3, resume=key, context=FitContext(tmp_path))
    assert result.start_epoch == 3 and resumed.validated == [4, 5, 6, 7, 8]
    assert [r["loss"] for r in result.history] == [r["loss"] for r in expected.history]
    assert same_weights(resumed.network, straight.network)
    assert not (tmp_path / "checkpoint.pt").exists()  # a completed fit leaves none behind
    Noisy(curve).fit(epochs=2, patience=3, resume=key, context=FitContext(tmp_path),
                     keep_checkpoint=True)  # fmt: skip
    assert (tmp_path / "checkpoint.pt").exists()


def test_rejects_nonsense_budgets():
    model = Noisy([])
    with pytest.raises(ValueError, match="epochs, patience and validate_every must be >= 1"):
        model.fit(epochs=0, patience=1)


KILLED_FIT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import polars as pl
    sys.path.insert(0, {tests!r})
    from fitting import training
    from shortrec.models.base import FitContext
    from shortrec.models.bpr import BPRRecommender

    rng = np.random.default_rng(0)
    n = 3000
    views = pl.DataFrame({{
        "user_id": rng.integers(0, 60, n), "video_id": rng.integers(0, 80, n),
        "watch_ratio": rng.random(n) * 2, "timestamp": np.arange(n, dtype=float),
    }})
    data = training(views.head(2500), views.tail(500))
    kill_at = int(sys.argv[2])

    def hook(epoch, score):
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    model = BPRRecommender(factors=8, batch_size=256, epochs=12, patience=50)
    model.fit(data, FitContext(sys.argv[1], progress=False, on_epoch_end=hook))
    np.save(sys.argv[3], model.item_factors_)
    """
)


def test_a_bpr_fit_killed_with_sigkill_resumes_to_the_same_model(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(KILLED_FIT.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(checkpoints, kill_at, out):
        return subprocess.run([sys.executable, str(script), str(tmp_path / checkpoints),
                               str(kill_at), str(tmp_path / out)], env=env,
                              capture_output=True, timeout=300)  # fmt: skip

    assert run("straight", 0, "straight.npy").returncode == 0
    killed = run("resumed", 5, "never.npy")
    assert killed.returncode == -signal.SIGKILL
    assert run("resumed", 0, "resumed.npy").returncode == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "straight.npy"), np.load(tmp_path / "resumed.npy")
    )


def test_models_on_the_loop_report_validation_ndcg_to_the_tuner():
    from shortrec.models.bpr import BPRRecommender

    rng = np.random.default_rng(1)
    import polars as pl

    views = pl.DataFrame({
        "user_id": rng.integers(0, 40, 2000), "video_id": rng.integers(0, 50, 2000),
        "watch_ratio": rng.random(2000) * 2, "timestamp": np.arange(2000, dtype=float),
    })  # fmt: skip
    reported = []
    model = BPRRecommender(factors=4, epochs=3, patience=5)
    hook = FitContext(progress=False, on_epoch_end=lambda e, s: reported.append((e, s)))
    model.fit(training(views.head(1600), views.tail(400)), hook)
    history = model.fit_report_["history"]
    assert [e for e, _ in reported] == [1, 2, 3]
    assert [s for _, s in reported] == [r["validation_ndcg@10"] for r in history]


DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, torch.distributed as dist
    from shortrec.training.distributed import rank_seed, world, wrap
    from shortrec.training.loop import FitContext, Resume, fit_epochs

    dist.init_process_group("gloo")
    job = world()
    out = sys.argv[1]

    def fit(epochs, folder, stop_at=None):
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 1)
        model = wrap(net, job, torch.device("cpu"))
        optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
        rng = np.random.default_rng(rank_seed(0, job))  # each rank its own stream
        gen = torch.Generator().manual_seed(rank_seed(1, job))

        def train_epoch(epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt
            x = torch.from_numpy(rng.normal(size=(8, 4)).astype(np.float32))
            loss = model(x + torch.randn(8, 4, generator=gen)).square().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return {"loss": float(loss.detach())}

        def validate(epoch):  # collective, as SASRec's is
            score = torch.tensor([float(net.weight.sum())])
            dist.all_reduce(score)
            return -abs(float(score))

        context = FitContext(f"{out}/{folder}" if job.is_main else None, progress=False)
        result = fit_epochs("toy", net, optimiser, train_epoch, validate, epochs=epochs,
                            patience=10, validate_every=2, context=context,
                            generators=[rng, gen], resume=Resume({"lr": 0.1}), job=job,
                            keep_checkpoint=True)
        return net, result

    full, _ = fit(6, "a")
    try:
        fit(6, "b", stop_at=4)
    except KeyboardInterrupt:
        pass
    resumed, result = fit(6, "b")
    if job.is_main:
        torch.save({"full": full.state_dict(), "resumed": resumed.state_dict(),
                    "start": result.start_epoch}, f"{out}/result.pt")
    dist.destroy_process_group()
    # gloo's threads can abort the interpreter's teardown ("terminate called without an
    # active exception") after everything above has finished; skip the teardown
    import os
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


@pytest.mark.slow
def test_a_resumed_two_process_fit_matches_an_uninterrupted_one(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    assert result["start"] == 3
    for name, tensor in result["full"].items():
        assert torch.equal(tensor, result["resumed"][name]), name
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert len(saved["random"]) == 2  # rank 0 wrote both ranks' streams
    assert not (tmp_path / "b" / "1").exists()
