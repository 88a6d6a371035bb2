"""What the report needs of a run folder: the paths it reads and writes, by name.

The report never spells a path itself. The pipeline hands it two objects with these
methods (``cinebrain.pipelines.runfolder``'s ``RunFolder`` to read the committed run
from, and the report stage's ``StagedFolder`` to write maps, figures and
``report.html`` into; a notebook may pass the same ``RunFolder`` twice). The protocols
below state the methods the report calls; any object that has them will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class AutoencoderLayout(Protocol):
    """Paths of the multimodal autoencoder's outputs in a run folder."""

    @property
    def comparison(self) -> Path: ...

    def metric(self, subject: str, name: str) -> Path: ...

    def lesion_names(self) -> list[str]: ...

    def lesion_map(self, name: str, subject: str | None, key: str,
                   nifti: bool = True) -> Path: ...

    def lesion_json(self, name: str) -> Path: ...

    def reconstruction(self, modality: str) -> Path: ...


class VideoGPTLayout(Protocol):
    """Paths of the video models' outputs in a run folder."""

    @property
    def model_json(self) -> Path: ...

    @property
    def evaluation(self) -> Path: ...

    def sample(self, k: int, kind: str) -> Path: ...

    def metric(self, subject: str, weights: str, layer: str) -> Path: ...


class RunLayout(Protocol):
    """Paths of a run folder (or of a stage's folder with the same layout)."""

    @property
    def config(self) -> Path: ...

    @property
    def summary(self) -> Path: ...

    @property
    def report(self) -> Path: ...

    @property
    def mask(self) -> Path: ...

    def map(self, name: str) -> Path: ...

    def figure(self, name: str) -> Path: ...

    def metric(self, subject: str, name: str) -> Path: ...

    def metric_names(self, subject: str, prefix: str = "") -> list[str]: ...

    @property
    def roi_summary(self) -> Path: ...

    @property
    def ground_truth(self) -> Path: ...

    @property
    def autoencoder(self) -> AutoencoderLayout: ...

    @property
    def videogpt(self) -> VideoGPTLayout: ...
