"""cinebrain.data."""

from cinebrain.data.simulate import simulate_study

__all__ = ["simulate_study"]
