"""cinebrain.nn: reusable layers for deep encoding models.

Attention and transformer blocks (PyTorch SDPA), modality encoders (image, video, audio,
text), multimodal fusion, voxel readouts, the neuron Gaussian readout, shifter and behaviour
modulators, and the causal HRF layer; each module is
configured by a dataclass or its arguments.
No dataset or training code lives here (see ``cinebrain.models`` / ``cinebrain.train``).
"""

from cinebrain.nn.attention import (
    MLP,
    AttentionPool,
    CrossAttention,
    DropPath,
    SelfAttention,
    Transformer,
    TransformerBlock,
    TransformerConfig,
)
from cinebrain.nn.bench import benchmark_encoders, format_table
from cinebrain.nn.common import count_parameters, make_norm
from cinebrain.nn.encoders import (
    AudioEncoder,
    AudioEncoderConfig,
    ConvImageConfig,
    ConvImageEncoder,
    TextEncoder,
    TextEncoderConfig,
    VideoEncoder,
    VideoEncoderConfig,
    ViTConfig,
    ViTImageEncoder,
)
from cinebrain.nn.fusion import FusionConfig, MultimodalCombiner
from cinebrain.nn.hrf import CausalHRF
from cinebrain.nn.modulators import ConvGRUCell, ConvGRUModulator, GRUModulator, MLPGain
from cinebrain.nn.readouts import (
    GaussianReadout,
    LinearVoxelHead,
    MultiSubjectHead,
    Shifter,
    inverse_output_nonlinearity,
    output_nonlinearity,
)

__all__ = [
    "MLP",
    "AttentionPool",
    "AudioEncoder",
    "AudioEncoderConfig",
    "CausalHRF",
    "ConvGRUCell",
    "ConvGRUModulator",
    "ConvImageConfig",
    "ConvImageEncoder",
    "CrossAttention",
    "DropPath",
    "FusionConfig",
    "GRUModulator",
    "GaussianReadout",
    "LinearVoxelHead",
    "MLPGain",
    "MultiSubjectHead",
    "MultimodalCombiner",
    "SelfAttention",
    "Shifter",
    "TextEncoder",
    "TextEncoderConfig",
    "Transformer",
    "TransformerBlock",
    "TransformerConfig",
    "VideoEncoder",
    "VideoEncoderConfig",
    "ViTConfig",
    "ViTImageEncoder",
    "benchmark_encoders",
    "count_parameters",
    "format_table",
    "inverse_output_nonlinearity",
    "make_norm",
    "output_nonlinearity",
]
