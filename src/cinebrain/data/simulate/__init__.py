"""A simulated naturalistic-viewing study with known ground truth.

:func:`simulate_study` writes, in the formats a user brings, a movie (procedural scenes
with a soundtrack), its annotations and transcript, 4D BOLD NIfTI files for several
subjects and runs, a study YAML, and a ``ground_truth/`` folder saying which voxels are
driven by what and how strongly. It is cinebrain's embedded demo dataset and its test
fixture.

The ground truth is *linear in what cinebrain's own features can see*, so the pipeline
(features from the mp4 -> TR resampling -> causal HRF -> banded ridge) can recover it:

* visual voxels (occipital cortex, MNI y < -70 mm): luminance and local motion energy
  (absolute frame difference) inside a Gaussian receptive field on a downsampled
  grayscale frame; receptive-field centres vary smoothly with voxel position
  (retinotopy-like: left hemisphere sees the right half of the frame, dorsal voxels the
  lower half, posterior voxels the centre);
* auditory voxels (bilateral superior temporal spheres): log-mel energy in a preferred
  frequency band of the soundtrack, the preference varying along the anterior-posterior
  axis (tonotopy-like);
* language voxels (a left-lateralised network: IFG, posterior temporal / angular,
  anterior temporal): a projection of the sentence embedding of the scene description
  (:func:`cinebrain.features.text_model.embed_texts`) on a few latent directions shared
  by neighbouring voxels.

Each stimulus feature is put on each run's TR grid with :func:`cinebrain.timing.resample`
(the same call the pipeline makes), projected to a voxel drive, convolved causally with
the canonical HRF per run (:func:`cinebrain.timing.convolve_hrf`) and z-scored: that is
the clean signal, shared by all subjects. Each subject adds its own noise (AR(1),
a low-rank "physiological" component with smooth spatial maps, and slow drift), scaled
per voxel to the voxel's true SNR times a subject-level factor, on a spatially smooth
baseline of about 1000. Voxels outside the brain mask are 0.

Timing follows the package convention: volume ``k`` of a run covers scan time
``[k * tr, (k + 1) * tr)``; run ``r`` shows stimulus seconds
``[r * run_duration, (r + 1) * run_duration)`` starting at scan time ``fixation``.

Layout written under ``out_dir`` (atomically: built in a hidden sibling folder, then
renamed, so an interrupted simulation never leaves a folder that looks complete)::

    study.yaml
    stimulus/movie.mp4  stimulus/annotations.tsv  stimulus/transcript.tsv
    sub-01/func/sub-01_run-1_bold.nii.gz ...
    ground_truth/mask.nii.gz  modality.nii.gz  modality.npy  snr.npy  snr_subjects.npy
                 signal_r.npy  driven.npy  signal.npy  drive.npy  voxel_params.npz
                 truth.json

Modules, lowest first: :mod:`~cinebrain.data.simulate.stimulus` (the movie, soundtrack,
annotations and transcript), :mod:`~cinebrain.data.simulate.truth` (the region and modality
codes and the ``ground_truth/`` folder) and :mod:`~cinebrain.data.simulate.fmri` (the brain
responses and :func:`simulate_study`). :mod:`~cinebrain.data.simulate.neurons` simulates
mouse V1 neurons watching natural-like movies (:func:`simulate_neuron_study`,
:func:`write_neuron_study`: Sensorium 2023 folders with known receptive fields and
behaviour gains).
"""

from cinebrain.data.simulate.fmri import simulate_study
from cinebrain.data.simulate.neurons import simulate_neuron_study, write_neuron_study
from cinebrain.data.simulate.truth import MODALITIES, REGIONS, truth_modality_file

__all__ = ["simulate_study", "truth_modality_file", "MODALITIES", "REGIONS",
           "simulate_neuron_study", "write_neuron_study"]
