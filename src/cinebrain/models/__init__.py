"""cinebrain.models: whole models built from :mod:`cinebrain.nn`.

The multimodal autoencoder (:mod:`cinebrain.models.autoencoder`; its windows of TRs are
:mod:`cinebrain.data.windows`), named presets (:mod:`~cinebrain.models.presets`), in-silico
lesions (:mod:`~cinebrain.models.lesion`) and stimulus reconstruction writers
(:mod:`~cinebrain.models.reconstruct`).
"""

from cinebrain.models.autoencoder import (
    AutoencoderConfig,
    DecoderConfig,
    Lesion,
    MultimodalAutoencoder,
    predict_dataset,
    windows_for,
)
from cinebrain.models.presets import get_preset, module_parameters, preset_names, preset_parameters

__all__ = [
    "AutoencoderConfig",
    "DecoderConfig",
    "Lesion",
    "MultimodalAutoencoder",
    "get_preset",
    "module_parameters",
    "predict_dataset",
    "preset_names",
    "preset_parameters",
    "windows_for",
]
