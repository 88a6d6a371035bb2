"""cinebrain.models: whole models built from :mod:`cinebrain.nn`.

The multimodal autoencoder (:mod:`cinebrain.models.autoencoder`: the model in
:mod:`~cinebrain.models.autoencoder.model`, whose windows of TRs are
:mod:`cinebrain.data.windows`, and named presets in
:mod:`~cinebrain.models.autoencoder.presets`), in-silico lesions
(:mod:`~cinebrain.models.lesion`) and stimulus reconstruction writers
(:mod:`~cinebrain.models.reconstruct`).
"""

from cinebrain.models.autoencoder import (
    AutoencoderConfig,
    DecoderConfig,
    Lesion,
    MultimodalAutoencoder,
    get_preset,
    module_parameters,
    predict_dataset,
    preset_names,
    preset_parameters,
    windows_for,
)

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
