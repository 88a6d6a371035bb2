"""cinebrain.report."""
