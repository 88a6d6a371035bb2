"""cinebrain.train."""
