"""The multimodal autoencoder: the model (:mod:`~cinebrain.models.autoencoder.model`) and
its named presets with parameter counts (:mod:`~cinebrain.models.autoencoder.presets`)."""

from cinebrain.models.autoencoder.model import (
    AutoencoderConfig,
    DecoderConfig,
    EncoderConfig,
    Lesion,
    ModalityDecoder,
    MultimodalAutoencoder,
    build_encoder,
    input_shape,
    pearson_from_stats,
    predict_dataset,
    windows_for,
)
from cinebrain.models.autoencoder.presets import (
    PRESETS,
    SHERLOCK2017_TABLE,
    get_preset,
    module_parameters,
    preset_names,
    preset_parameters,
)

__all__ = [
    "PRESETS",
    "SHERLOCK2017_TABLE",
    "AutoencoderConfig",
    "DecoderConfig",
    "EncoderConfig",
    "Lesion",
    "ModalityDecoder",
    "MultimodalAutoencoder",
    "build_encoder",
    "get_preset",
    "input_shape",
    "module_parameters",
    "pearson_from_stats",
    "predict_dataset",
    "preset_names",
    "preset_parameters",
    "windows_for",
]
