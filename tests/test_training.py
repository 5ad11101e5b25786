"""Generic training pieces: sequence batching, early stopping, checkpoints, devices."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from shortrec.data.histories import Histories, IdMap
from shortrec.training.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from shortrec.training.device import blas_threads, seeded_global_rng, select_device, torch_threads
from shortrec.training.early_stopping import EarlyStopping
from shortrec.training.sequences import Sequences, epoch_batches, fast_index, flat_ranges


def views() -> pl.DataFrame:
    # User 2's rows are out of time order in the file; video 40 is disliked.
    return pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2, 2],
            "video_id": [10, 20, 30, 40, 10, 20, 30],
            "timestamp": [1.0, 2.0, 3.0, 9.0, 5.0, 6.0, 7.0],
        }
    )


def test_sequences_are_time_ordered_dense_and_one_based():
    video_map = IdMap.from_ids(np.array([10, 20, 30, 40]))
    disliked = np.array([False, False, False, True, False, False, False])
    seqs = Sequences.from_frame(views(), video_map, disliked)
    assert seqs.user_ids.tolist() == [1, 2]
    assert seqs.items.tolist() == [1, 2, 3, 1, 2, 3, 4]
    assert seqs.disliked.tolist() == [False] * 6 + [True]
    items, lengths = seqs.tail(np.array([1, 0]), maxlen=2)
    assert items.tolist() == [[3, 4], [2, 3]] and lengths.tolist() == [2, 2]


def test_training_batch_pairs_each_item_with_the_next_and_right_pads():
    video_map = IdMap.from_ids(np.array([10, 20, 30, 40]))
    disliked = np.array([False, False, False, True, False, False, False])
    seqs = Sequences.from_frame(views(), video_map, disliked)
    inputs, targets, target_disliked, lengths = seqs.training_batch(
        np.array([0, 1]), maxlen=3, ends=np.array([2, 4])
    )
    assert inputs.tolist() == [[1, 0, 0], [1, 2, 3]]
    assert targets.tolist() == [[2, 0, 0], [2, 3, 4]]
    assert target_disliked.tolist() == [[False] * 3, [False, False, True]]
    assert lengths.tolist() == [1, 3]
    # maxlen truncates to the newest window.
    inputs, targets, _, lengths = seqs.training_batch(np.array([1]), maxlen=2, ends=np.array([4]))
    assert inputs.tolist() == [[2, 3]] and targets.tolist() == [[3, 4]]


def test_sequences_from_histories_drop_unknown_videos_and_keep_user_order():
    history = Histories.from_frame(
        views()
        .with_columns(pl.lit(1.0).alias("watch_ratio"))
        .vstack(
            pl.DataFrame(
                {"user_id": [1], "video_id": [99], "timestamp": [2.5], "watch_ratio": [1.0]}
            )  # fmt: skip
        )
    )
    video_map = IdMap.from_ids(np.array([10, 20, 30]))
    seqs = Sequences.from_histories(history, np.array([2, 7, 1]), video_map)
    assert seqs.lengths.tolist() == [3, 0, 3]
    assert seqs.items.tolist() == [1, 2, 3, 1, 2, 3]
    items, lengths = seqs.tail(np.arange(3), maxlen=5)
    assert lengths.tolist() == [3, 0, 3] and items[1].tolist() == [0, 0, 0]


def test_epoch_batches_cover_every_row_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 1000)
    batches = epoch_batches(lengths, batch_size=10, rng=rng, pool_batches=100)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.1 * lengths.sum()  # unsorted batches would pad ~1.9x


def test_flat_ranges():
    assert flat_ranges(np.array([5, 0, 2]), np.array([2, 0, 3])).tolist() == [5, 6, 2, 3, 4]


def test_early_stopping_counts_evaluations_without_improvement():
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.1, 1) and stopper.update(0.2, 2)
    assert not stopper.update(0.15, 3) and not stopper.should_stop
    assert not stopper.update(0.2, 4) and stopper.should_stop
    assert (stopper.best_score, stopper.best_epoch) == (0.2, 2)
    again = EarlyStopping.from_state_dict(stopper.state_dict())
    assert again == stopper


def test_checkpoint_round_trip_and_compatibility(tmp_path):
    assert load_checkpoint(tmp_path) is None
    state = {"epoch": 3, "weights": torch.arange(4.0), "ids": np.arange(3)}
    path = save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], state["weights"])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers
    check_compatible({"maxlen": 50}, {"maxlen": 50}, path)
    with pytest.raises(ValueError, match="maxlen: saved 50, now 20"):
        check_compatible({"maxlen": 50}, {"maxlen": 20}, path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path)


def test_device_selection_and_scoped_rng_and_threads():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device"):
        select_device("tpu")
    before = torch.get_rng_state()
    with seeded_global_rng(7, torch.device("cpu")):
        a = torch.rand(3)
    with seeded_global_rng(7, torch.device("cpu")):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)
    threads = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


def test_blas_threads_limits_numpys_pool_and_restores_it():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_pools() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    if not blas_pools():
        pytest.skip("NumPy here has no BLAS thread pool that threadpoolctl can see")
    with threadpool_limits(2, "blas"):  # a known starting point, even on a 1-core machine
        before = blas_pools()
        with blas_threads(1):
            assert blas_pools() == [1] * len(before)
        assert blas_pools() == before
        with blas_threads(0):  # 0: leave the pool as it is
            assert blas_pools() == before


def test_fast_index_agrees_with_id_map():
    rng = np.random.default_rng(0)
    small = IdMap.from_ids(rng.integers(0, 500, 200))
    raw = np.concatenate([rng.integers(-5, 600, 1000), [10**12]])
    assert np.array_equal(fast_index(small, raw), small.index(raw))
    sparse = IdMap.from_ids(np.array([3, 10**10]))  # too spread out for a table
    assert fast_index(sparse, np.array([10**10, 4])).tolist() == [1, -1]
    assert fast_index(IdMap.from_ids(np.array([], np.int64)), np.array([1])).tolist() == [-1]
