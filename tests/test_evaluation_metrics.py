"""Metric code against hand-computed cases."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shortrec.evaluation.metrics import catalogue_coverage, full_ranking_metrics, sampled_metrics
from shortrec.evaluation.statistics import bootstrap_interval, paired_comparison


def test_hand_computed_ranking():
    # One user, 5 candidates ranked c0 > c1 > c2 > c3 > c4; relevant: c1 and c3.
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    relevance = np.array([[False, True, False, True, False]])
    gains = np.array([[0.0, 2.0, 0.0, 1.0, 0.0]])
    m, top = full_ranking_metrics(scores, relevance, gains, ks=(2, 4))
    assert top[0].tolist() == [0, 1, 2, 3]
    d = [1 / math.log2(i + 2) for i in range(4)]
    assert m["ndcg@2"][0] == pytest.approx(d[1] / (d[0] + d[1]))
    assert m["ndcg@4"][0] == pytest.approx((d[1] + d[3]) / (d[0] + d[1]))
    assert m["precision@2"][0] == pytest.approx(0.5)
    assert m["precision@4"][0] == pytest.approx(0.5)
    assert m["recall@2"][0] == pytest.approx(0.5)
    assert m["recall@4"][0] == pytest.approx(1.0)
    assert m["hitrate@2"][0] == 1.0
    # AP@4 = (1/2 + 2/4) / 2
    assert m["map@4"][0] == pytest.approx(0.5)
    assert m["map@2"][0] == pytest.approx(0.5 / 2)
    assert m["mrr"][0] == pytest.approx(0.5)
    # Graded: gains 2 at rank 2 and 1 at rank 4; ideal 2 then 1.
    assert m["graded_ndcg@4"][0] == pytest.approx((2 * d[1] + d[3]) / (2 * d[0] + d[1]))


def test_users_without_relevant_items_are_nan_and_ties_are_random():
    scores = np.zeros((2, 1000))
    relevance = np.zeros((2, 1000), dtype=bool)
    relevance[1, :10] = True  # the first columns: constant scores must not favour them
    m, _ = full_ranking_metrics(scores, relevance, None, ks=(10,))
    assert np.isnan(m["ndcg@10"][0])
    assert m["ndcg@10"][1] < 0.5
    # Expected rank of the first of 10 relevant among 1000 tied: 1 + 990 / 11.
    assert m["mrr"][1] == pytest.approx(1 / (1 + 990 / 11))


def test_excluded_candidates_never_recommended():
    scores = np.array([[np.inf * -1, 1.0, 0.5]])
    relevance = np.array([[True, False, True]])
    m, top = full_ranking_metrics(scores, relevance, None, ks=(2,))
    assert 0 not in top[0]
    assert m["recall@2"][0] == pytest.approx(0.5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 30), st.integers(0, 10_000))
def test_metric_bounds(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items))
    relevance = rng.random((n_users, n_items)) < 0.3
    m, _ = full_ranking_metrics(scores, relevance, rng.random((n_users, n_items)), ks=(1, 5))
    for values in m.values():
        finite = values[~np.isnan(values)]
        assert ((finite >= 0) & (finite <= 1 + 1e-9)).all()
    # A perfect ranking (relevant first) has NDCG 1.
    perfect, _ = full_ranking_metrics(relevance.astype(float), relevance, None, ks=(5,))
    ok = relevance.any(axis=1)
    assert np.allclose(perfect["ndcg@5"][ok], 1.0)


def test_sampled_metrics_hand_case():
    pos = np.array([3.0, 0.0])
    neg = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    m = sampled_metrics(pos, neg, ks=(1, 2))
    assert m["hitrate@1"].tolist() == [0.0, 0.0]
    assert m["hitrate@2"].tolist() == [1.0, 0.0]
    assert m["ndcg@2"][0] == pytest.approx(1 / math.log2(3))


def test_coverage():
    top = np.array([[0, 1], [1, 2]])
    assert catalogue_coverage(top, 2, 10) == pytest.approx(0.3)
    assert catalogue_coverage(top, 1, 10) == pytest.approx(0.2)


def test_bootstrap_and_paired():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    iv = bootstrap_interval(a)
    assert iv.low < a.mean() < iv.high
    assert iv.high - iv.low < 0.1
    cmp = paired_comparison("m", a, a + 0.05)
    assert cmp.difference.mean == pytest.approx(0.05)
    assert cmp.p_value < 1e-6 and cmp.b_better == 500
    same = paired_comparison("m", a, a)
    assert same.p_value == 1.0 and same.ties == 500
