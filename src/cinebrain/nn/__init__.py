"""cinebrain.nn."""
