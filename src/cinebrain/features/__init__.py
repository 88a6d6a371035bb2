"""Feature extractors. Each returns :class:`FeatureSpace` objects in stimulus time.

- :func:`~cinebrain.features.video.extract_video`: pixels, luminance, motion, motion energy
- :func:`~cinebrain.features.audio.extract_audio`: RMS envelope, log-mel spectrogram
- :func:`~cinebrain.features.text.text_embeddings`, :func:`~cinebrain.features.text.transcript_features`
- :func:`~cinebrain.features.annotations.annotation_features`
- :func:`~cinebrain.features.stimulus.extract_stimulus_features`: all of them for a study's
  stimulus (cached), :func:`~cinebrain.features.stimulus.save_feature_spaces` /
  :func:`~cinebrain.features.stimulus.load_feature_spaces`
- :func:`~cinebrain.features.activations.extract_activations`: named layers of any torch
  network (forward hooks) over sliding clips of a movie, time-stamped causally;
  :func:`~cinebrain.features.activations.load_pretrained` loads a Hugging Face model from a
  local folder (imported from its module: it needs torch)
- :func:`~cinebrain.features.cache.cached`, :func:`~cinebrain.features.cache.cached_many`
"""

from cinebrain.features.annotations import annotation_features
from cinebrain.features.audio import extract_audio
from cinebrain.features.base import FeatureSpace
from cinebrain.features.cache import cached, cached_many
from cinebrain.features.stimulus import (
    extract_stimulus_features,
    load_feature_spaces,
    save_feature_spaces,
)
from cinebrain.features.text import text_embeddings, transcript_features
from cinebrain.features.video import MotionEnergyPyramid, extract_video

__all__ = [
    "FeatureSpace",
    "MotionEnergyPyramid",
    "annotation_features",
    "cached",
    "cached_many",
    "extract_audio",
    "extract_stimulus_features",
    "extract_video",
    "load_feature_spaces",
    "save_feature_spaces",
    "text_embeddings",
    "transcript_features",
]
