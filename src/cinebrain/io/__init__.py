"""cinebrain.io: readers and writers that validate what the user gives.

Every reader raises :class:`cinebrain.errors.InputError` (one line: the file, the
problem, the fix) on bad input.

- :mod:`~cinebrain.io.video`: :class:`VideoReader`, :func:`read_video_info`, :func:`write_video`
- :mod:`~cinebrain.io.audio`: :func:`read_audio`
- :mod:`~cinebrain.io.annotations`: :func:`read_annotations`, :func:`read_transcript`, :func:`read_table`
- :mod:`~cinebrain.io.nifti`: :func:`load_bold`, :func:`load_mask`, :func:`compute_mask`,
  :func:`apply_mask`, :func:`unmask`
- :mod:`~cinebrain.io.arrays`: :func:`read_timeseries`, :func:`validate_timeseries`
- :mod:`~cinebrain.io.study`: :class:`Study`, :func:`load_study`, :func:`write_study`,
  :func:`format_validation_error`
- :mod:`~cinebrain.io.neurons`: :class:`NeuronSession`, :func:`read_sensorium`,
  :func:`write_sensorium`, :func:`read_neuron_arrays`, :func:`write_neuron_arrays`,
  :func:`read_neuron_session` (any of them by path)
- :mod:`~cinebrain.io.nwb`: :func:`read_nwb_session`, :func:`write_nwb_session`

Submodules are imported on first use, so ``import cinebrain.io`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VideoReader": "video",
    "read_video_info": "video",
    "write_video": "video",
    "read_audio": "audio",
    "read_annotations": "annotations",
    "read_transcript": "annotations",
    "read_table": "annotations",
    "load_bold": "nifti",
    "load_bold_header": "nifti",
    "check_tr": "nifti",
    "header_tr": "nifti",
    "load_mask": "nifti",
    "compute_mask": "nifti",
    "apply_mask": "nifti",
    "unmask": "nifti",
    "read_timeseries": "arrays",
    "validate_timeseries": "arrays",
    "Study": "study",
    "Stimulus": "study",
    "Annotations": "study",
    "Subject": "study",
    "Run": "study",
    "load_study": "study",
    "write_study": "study",
    "format_validation_error": "study",
    "NeuronSession": "neurons",
    "read_sensorium": "neurons",
    "write_sensorium": "neurons",
    "read_neuron_arrays": "neurons",
    "write_neuron_arrays": "neurons",
    "read_neuron_session": "neurons",
    "read_nwb_session": "nwb",
    "write_nwb_session": "nwb",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
