"""Pipelines: the library's pieces wired into runs (loops, logging and files; no science).

One module per model family (:mod:`ridge`, :mod:`autoencoder`) and :mod:`runfolder`, the
only place that knows the layout of a run folder.
"""
