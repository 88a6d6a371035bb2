"""cinebrain.models: whole models built from :mod:`cinebrain.nn`.

The multimodal autoencoder (:mod:`cinebrain.models.autoencoder`: the model in
:mod:`~cinebrain.models.autoencoder.model`, whose windows of TRs are
:mod:`cinebrain.data.windows`, and named presets in
:mod:`~cinebrain.models.autoencoder.presets`), in-silico lesions
(:mod:`~cinebrain.models.lesion`), stimulus reconstruction writers
(:mod:`~cinebrain.models.reconstruct`), and the neuron models
(:mod:`~cinebrain.models.neurons`: a ViViT (:mod:`~cinebrain.models.vivit`) or conv
(:mod:`~cinebrain.models.convcore`) core with per-session Gaussian readouts), and the
self-supervised video models of seed 004 (:mod:`~cinebrain.models.vqvae`,
:mod:`~cinebrain.models.videogpt`).
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
from cinebrain.models.convcore import Conv3dCore
from cinebrain.models.neurons import NeuronModel, make_core, make_neuron_model, session_specs
from cinebrain.models.videogpt import VideoGPT, VideoGPTConfig
from cinebrain.models.vqvae import VQVAE, VQVAEConfig

__all__ = [
    "AutoencoderConfig",
    "Conv3dCore",
    "DecoderConfig",
    "Lesion",
    "MultimodalAutoencoder",
    "NeuronModel",
    "VQVAE",
    "VQVAEConfig",
    "VideoGPT",
    "VideoGPTConfig",
    "get_preset",
    "make_core",
    "make_neuron_model",
    "module_parameters",
    "predict_dataset",
    "preset_names",
    "preset_parameters",
    "session_specs",
    "windows_for",
]
