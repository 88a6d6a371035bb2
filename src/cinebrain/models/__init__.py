"""cinebrain.models: whole models built from :mod:`cinebrain.nn`.

The multimodal autoencoder (:mod:`cinebrain.models.autoencoder`), its window datasets
(:mod:`~cinebrain.models.autoencoder_data`), named presets (:mod:`~cinebrain.models.presets`),
in-silico lesions (:mod:`~cinebrain.models.lesion`) and stimulus reconstruction writers
(:mod:`~cinebrain.models.reconstruct`).
"""

from cinebrain.models.autoencoder import (
    AutoencoderConfig,
    CausalHRF,
    DecoderConfig,
    Lesion,
    MultimodalAutoencoder,
    predict_dataset,
)
from cinebrain.models.autoencoder_data import (
    WindowDataset,
    collate_windows,
    multi_subject_dataset,
    windows_for,
)
from cinebrain.models.presets import count_parameters, get_preset, preset_names

__all__ = [
    "AutoencoderConfig",
    "CausalHRF",
    "DecoderConfig",
    "Lesion",
    "MultimodalAutoencoder",
    "WindowDataset",
    "collate_windows",
    "count_parameters",
    "get_preset",
    "multi_subject_dataset",
    "predict_dataset",
    "preset_names",
    "windows_for",
]
