"""cinebrain.timing."""
