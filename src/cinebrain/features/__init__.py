"""Feature extractors. Each returns a :class:`FeatureSpace`."""

from cinebrain.features.base import FeatureSpace

__all__ = ["FeatureSpace"]
