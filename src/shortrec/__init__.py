"""shortrec: honest, fast short-video recommenders on KuaiRec 2.0."""

__version__ = "0.1.0"
