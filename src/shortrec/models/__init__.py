"""Every recommender, by name. Modules are imported on first use, so `shortrec` starts fast
and a model's heavy dependencies (torch, implicit, lightgbm) load only when it is used."""

from __future__ import annotations

import importlib

from shortrec.models.base import Recommender

# name -> "module:Class"; one module per model.
REGISTRY: dict[str, str] = {
    "random": "shortrec.models.baselines:RandomRecommender",
    "popular": "shortrec.models.baselines:PopularRecommender",
    "recent-popular": "shortrec.models.baselines:RecentPopularRecommender",
    "oracle": "shortrec.models.baselines:OracleRecommender",
    "sasrec": "shortrec.models.sasrec:SASRec",
    "two-tower": "shortrec.models.two_tower:TwoTowerRecommender",
    "linear-regression": "shortrec.models.regression:LinearRegressionRecommender",
    "mean-regression": "shortrec.models.regression:MeanRegressor",
    "two-stage": "shortrec.models.two_stage:TwoStageRecommender",
    "als": "shortrec.models.als:ALSRecommender",
    "bpr": "shortrec.models.bpr:BPRRecommender",
    "ease": "shortrec.models.ease:EASERecommender",
    "autoencoder": "shortrec.models.autoencoder:DeepAutoencoderRecommender",
    "multvae": "shortrec.models.multvae:MultVAERecommender",
}


def model_class(name: str) -> type[Recommender]:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def default_models() -> list[str]:
    """Every registered model but the reference points (`Recommender.reference`, e.g. the
    oracle, which needs a synthetic world's ground truth): what `tune all` and the benchmark
    run."""
    return [name for name in REGISTRY if not model_class(name).reference]
