"""Differentiable augmentation (DSA), 2D and 3D, driven by explicit seeded generators."""

from meddistill.augment.dsa import DEFAULT_STRATEGY, DSA, GROUPS, DSADraw, DSAParams, parse_strategy

__all__ = ["DEFAULT_STRATEGY", "DSA", "DSADraw", "DSAParams", "GROUPS", "parse_strategy"]
