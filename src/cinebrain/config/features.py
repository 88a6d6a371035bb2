"""``features``: which feature spaces to extract from the study's stimulus."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cinebrain.config.base import Section


class NetworkFeatures(Section):
    """Activations of a network on disk as feature spaces, one per layer (each its own band):
    a Hugging Face model folder (``config.json`` and weights, loaded offline), or a cinebrain
    run folder whose ``cinebrain videogpt train`` finished (its GPT, on clips of its own
    frame size and rate)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", description="prefix of the spaces' "
                      "names (<name>.<layer>)")
    model: str = Field(..., description="a Hugging Face model folder or a cinebrain run "
                       "folder with a trained video model")
    layers: list[str] | None = Field(None, description="module names (null: a video model's "
                                     "attention blocks; required for a Hugging Face model)")
    window: int = Field(1, ge=1, description="frames per clip (a Hugging Face image model sees "
                        "the clip's last frame; a video model the whole clip); ignored for a "
                        "cinebrain video model (two of its clips)")
    stride: int = Field(1, ge=1, description="a row every this many frames")
    pool: Literal["mean", "first", "last", "flatten", "space"] = Field(
        "mean", description="per clip and layer: mean over tokens / positions, the first "
        "(a ViT's CLS token), the last, every value, or (a cinebrain video model) each code "
        "position averaged over time")
    size: tuple[int, int] = Field((224, 224), description="frame size decoded (width, "
                                  "height); a Hugging Face model resizes to its image_size")
    gray: bool = Field(False, description="decode grey frames")


class FeaturesConfig(Section):
    """Which feature spaces to extract from the study's stimulus."""

    video: list[Literal["pixels", "luminance", "motion", "motion_energy"]] = Field(
        default_factory=lambda: ["pixels", "motion_energy"],
        description="video feature spaces (empty list: none)",
    )
    audio: list[Literal["envelope", "mel"]] = Field(
        default_factory=lambda: ["envelope", "mel"], description="audio feature spaces"
    )
    annotation_text: bool = Field(True, description="embed the annotation sheet's text columns")
    annotation_columns: bool = Field(
        True, description="one-hot categorical and raw numeric annotation columns"
    )
    transcript: list[Literal["words", "word_rate"]] = Field(
        default_factory=lambda: ["words", "word_rate"], description="transcript spaces"
    )
    networks: list[NetworkFeatures] = Field(
        default_factory=list, description="networks on disk whose layers' activations over "
        "the movie become feature spaces (one band per layer)")
    video_size: tuple[int, int] = Field((160, 90), description="frame size (width, height) read")
    pixel_size: tuple[int, int] = Field((32, 18), description="grayscale pixel-space size (w, h)")
    n_mels: int = Field(64, ge=8, le=512, description="mel bins")
    audio_sr: int = Field(16000, ge=4000, le=96000, description="audio sample rate (Hz)")
