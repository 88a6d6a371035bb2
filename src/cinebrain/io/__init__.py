"""cinebrain.io."""
