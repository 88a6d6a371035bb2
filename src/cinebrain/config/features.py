"""``features``: which feature spaces to extract from the study's stimulus."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cinebrain.config.base import Section


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
    video_size: tuple[int, int] = Field((160, 90), description="frame size (width, height) read")
    pixel_size: tuple[int, int] = Field((32, 18), description="grayscale pixel-space size (w, h)")
    n_mels: int = Field(64, ge=8, le=512, description="mel bins")
    audio_sr: int = Field(16000, ge=4000, le=96000, description="audio sample rate (Hz)")
