"""cinebrain.models."""
