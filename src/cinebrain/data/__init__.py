"""cinebrain.data."""
