"""cinebrain.linear."""
