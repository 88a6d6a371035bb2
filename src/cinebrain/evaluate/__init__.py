"""cinebrain.evaluate."""
