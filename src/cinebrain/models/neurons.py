"""A neuron model: a shared video core, and per session a Gaussian readout, shifter and modulator.

The neuralpredictors composition (Lurz et al. 2021; the Sensorium 2023 baselines): one core
(:class:`~cinebrain.models.convcore.Conv3dCore` or :class:`~cinebrain.models.vivit.ViViTCore`)
maps the video to features ``(B, C, T, h, w)`` for every session; each session has its own
:class:`~cinebrain.nn.readouts.GaussianReadout`, optionally an eye-position
:class:`~cinebrain.nn.readouts.Shifter` and a behaviour modulator
(:mod:`cinebrain.nn.modulators`). Every part is causal in time, so the predicted rate at
frame t depends on video and behaviour at frames <= t only.

``forward(batch)`` takes the neuron batch dict ("video" (B, 1, T, H, W), "behavior"
(B, T, n_b), "pupil_center" (B, T, 2), "responses" (B, T, N_max), "mask" (B, N_max) bool,
"session" (B,) int64: the index of the session in ``sessions``, in its order) and returns
``{"rate": (B, T, N_max)}``, positive for real neurons and 0 where the mask is False. A batch
may mix sessions: its rows are grouped by session. Behaviour columns past a session's
``n_behavior`` are ignored (padding).

The model follows the training engine's protocol (:mod:`cinebrain.train.trainer`): the
loss is the Poisson negative log-likelihood ``rate - y log(rate + 1e-8)`` averaged over real
neurons and the frames after ``burn_in``, plus ``l1`` times the readouts' feature-weight L1;
validation reports ``r``, the single-trial correlation per neuron (frames after ``burn_in``
of every validation trial concatenated, per neuron) averaged over the neurons of every
session, so early stopping watches ``val_r``. Under DDP set ``find_unused_parameters: true``:
a batch without some session leaves that session's readout without gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cinebrain.errors import ConfigError, InputError
from cinebrain.io.neurons import NeuronSession
from cinebrain.metrics import pearson_r
from cinebrain.models import vivit
from cinebrain.models.convcore import Conv3dCore
from cinebrain.nn.modulators import ConvGRUModulator, GRUModulator, MLPGain
from cinebrain.nn.readouts import GaussianReadout, Shifter, output_nonlinearity

MODULATORS = ("gru", "convgru", "mlp")
CORES = ("conv", "vivit", *vivit.PRESETS)
_EPS = 1e-8
_SESSION_KEYS = {"n_neurons", "mean_response", "n_behavior", "pupil_center_mean", "pupil_center_std"}


def _plain_sessions(sessions: dict[str, dict]) -> dict[str, dict]:
    """Validated sessions with plain values (lists, ints), as a checkpoint stores them."""
    if not sessions:
        raise ConfigError("sessions", "no session given", "give {name: {n_neurons, mean_response, n_behavior}}")
    out = {}
    for name, info in sessions.items():
        where = f"sessions.{name}"
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError("sessions", f"session name {name!r} must be a non-empty string without '.'")
        unknown = set(info) - _SESSION_KEYS
        if unknown:
            raise ConfigError(where, f"unknown key(s) {', '.join(sorted(unknown))}",
                              f"use {', '.join(sorted(_SESSION_KEYS))}")
        if "n_neurons" not in info:
            raise ConfigError(where, "n_neurons is missing")
        n = int(info["n_neurons"])
        if n < 1:
            raise ConfigError(where, f"n_neurons must be >= 1, got {n}")
        mean = info.get("mean_response")
        mean = None if mean is None else np.asarray(mean, dtype=np.float32).reshape(-1)
        if mean is not None and mean.shape != (n,):
            raise ConfigError(where, f"mean_response has {mean.size} values for {n} neurons",
                              "give one mean response per neuron")
        plain = {"n_neurons": n, "mean_response": None if mean is None else mean.tolist(),
                 "n_behavior": int(info.get("n_behavior", 0))}
        for key in ("pupil_center_mean", "pupil_center_std"):
            if info.get(key) is not None:
                plain[key] = np.asarray(info[key], dtype=np.float32).reshape(2).tolist()
        out[name] = plain
    return out


class NeuronModel(nn.Module):
    """Shared core, per-session Gaussian readout (+ shifter, + modulator); see the module doc.

    Parameters
    ----------
    core : nn.Module
        Video (B, 1, T, H, W) -> features (B, C, T, h, w), causal, with ``out_channels``.
    sessions : dict
        ``{name: {"n_neurons": N, "mean_response": (N,) or None, "n_behavior": n_b}}``, optional
        ``"pupil_center_mean"`` / ``"pupil_center_std"`` (2,) standardising the shifter's input.
        The batch's ``session`` index counts sessions in this order.
    modulator : "gru", "convgru", "mlp" or None
        ``gru``: a GRU over behaviour adds a per-neuron drive before the nonlinearity;
        ``mlp``: a gain exp(MLP(b_t)) multiplies the rate; ``convgru``: a convolutional GRU
        modulates the core's feature map. Sessions with ``n_behavior == 0`` get none.
    shifter : bool
        A :class:`Shifter` per session moves the readout positions with the eye position.
    nonlinearity : "softplus" or "elu1"
    l1 : float
        Weight of the readouts' feature-weight L1 in the training loss.
    burn_in : int
        Leading frames of every trial left out of the loss and of the validation r.
    readout : dict
        Options of :class:`GaussianReadout` (init_mu_range, init_sigma).
    modulator_hidden, shifter_hidden : int
        Hidden units (channels for convgru) of the modulators and shifters.
    frame_shape : (T, H, W) or None
        The training clips' shape; with it :meth:`flops_per_sample` reports the core's FLOPs.
    """

    def __init__(
        self,
        core: nn.Module,
        sessions: dict[str, dict],
        *,
        modulator: str | None = "gru",
        shifter: bool = True,
        nonlinearity: str = "softplus",
        l1: float = 0.01,
        burn_in: int = 0,
        readout: dict | None = None,
        modulator_hidden: int = 16,
        shifter_hidden: int = 5,
        frame_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        if modulator is not None and modulator not in MODULATORS:
            raise ConfigError("modulator", f"unknown modulator {modulator!r}",
                              f"use one of {', '.join(MODULATORS)} or null")
        if l1 < 0 or burn_in < 0:
            raise ConfigError("neuron model", f"l1 and burn_in must be >= 0, got {l1}, {burn_in}")
        if not hasattr(core, "out_channels"):
            raise ConfigError("core", f"{type(core).__name__} has no out_channels")
        sessions = _plain_sessions(sessions)
        readout = dict(readout or {})
        self.core = core
        self.session_names = list(sessions)
        self.sessions = sessions
        self.modulator, self.shifter, self.nonlinearity = modulator, shifter, nonlinearity
        self.l1_weight, self.burn_in = float(l1), int(burn_in)
        self.frame_shape = None if frame_shape is None else tuple(int(v) for v in frame_shape)
        c = core.out_channels
        self.readouts = nn.ModuleDict({
            name: GaussianReadout(c, info["n_neurons"], bias_init=info["mean_response"], shift=shifter,
                                  nonlinearity=nonlinearity, **readout)
            for name, info in sessions.items()})
        self.shifters = nn.ModuleDict({
            name: Shifter(shifter_hidden, center=info.get("pupil_center_mean"), scale=info.get("pupil_center_std"))
            for name, info in sessions.items()}) if shifter else None
        mods = {}
        for name, info in sessions.items():
            n_b, n = info["n_behavior"], info["n_neurons"]
            if modulator is None or n_b == 0:
                continue
            if modulator == "gru":
                mods[name] = GRUModulator(n_b, n, hidden=modulator_hidden)
            elif modulator == "mlp":
                mods[name] = MLPGain(n_b, n, hidden=modulator_hidden)
            else:
                mods[name] = ConvGRUModulator(n_b, c, hidden=modulator_hidden)
        self.modulators = nn.ModuleDict(mods)
        self.config: dict[str, Any] = dict(
            sessions=sessions, modulator=modulator, shifter=shifter, nonlinearity=nonlinearity, l1=float(l1),
            burn_in=int(burn_in), readout=readout, modulator_hidden=modulator_hidden,
            shifter_hidden=shifter_hidden, frame_shape=None if frame_shape is None else list(self.frame_shape))

    # ------------------------------------------------------------------ engine hooks
    def flops_per_sample(self) -> float | None:
        """The core's training FLOPs per clip of ``frame_shape`` (None when unknown)."""
        if self.frame_shape is None:
            return None
        if isinstance(self.core, vivit.ViViTCore):
            return vivit.flops_per_sample(self.core.config, *self.frame_shape)
        count = getattr(self.core, "flops_per_sample", None)
        return float(count(*self.frame_shape)) if callable(count) else None

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        if not callable(getattr(self.core, "set_grad_checkpointing", None)):
            raise ConfigError("train.grad_checkpointing",
                              f"the {type(self.core).__name__} core does not support gradient checkpointing",
                              "set grad_checkpointing: false")
        self.core.set_grad_checkpointing(enabled)

    # ------------------------------------------------------------------ forward
    def _session_drive(self, name: str, features: torch.Tensor, behavior: torch.Tensor | None,
                       pupil: torch.Tensor | None) -> torch.Tensor:
        info = self.sessions[name]
        mod = self.modulators[name] if name in self.modulators else None
        beh = None
        if mod is not None:
            if behavior is None or behavior.shape[-1] < info["n_behavior"]:
                got = None if behavior is None else behavior.shape[-1]
                raise InputError(f"batch of session {name!r}", f"behaviour has {got} columns, the session "
                                 f"{info['n_behavior']}", "give the session's behaviour in the batch")
            beh = behavior[..., :info["n_behavior"]]
        if isinstance(mod, ConvGRUModulator):
            features = mod(features, beh)
        shift = None
        if self.shifters is not None:
            if pupil is None:
                raise InputError(f"batch of session {name!r}", "no pupil_center for the shifter",
                                 "give pupil_center (zeros without eye tracking) or build with shifter=False")
            shift = self.shifters[name](pupil)
        drive = self.readouts[name](features, shift)  # (b, T, N)
        if isinstance(mod, GRUModulator):
            drive = drive + mod(beh)
        rate = output_nonlinearity(drive, self.nonlinearity)
        if isinstance(mod, MLPGain):
            rate = rate * mod(beh)
        return rate

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        video, session, mask = batch["video"], batch["session"], batch["mask"]
        b, n_max = video.shape[0], mask.shape[1]
        if session.shape != (b,) or mask.shape[0] != b:
            raise InputError("batch", f"session {tuple(session.shape)} and mask {tuple(mask.shape)} do not "
                             f"match {b} videos", "give one session index and one mask row per sample")
        features = self.core(video)  # (B, C, T, h, w)
        t = features.shape[2]
        behavior, pupil = batch.get("behavior"), batch.get("pupil_center")
        rate = features.new_zeros(b, t, n_max, dtype=torch.float32)
        for s in torch.unique(session).tolist():
            if not 0 <= s < len(self.session_names):
                raise InputError("batch.session", f"session index {s} for a model of "
                                 f"{len(self.session_names)} sessions", "index sessions in the model's order")
            name = self.session_names[s]
            n = self.sessions[name]["n_neurons"]
            if n > n_max:
                raise InputError("batch.mask", f"session {name!r} has {n} neurons, the batch {n_max}",
                                 "pad responses and mask to the largest session")
            rows = (session == s).nonzero(as_tuple=True)[0]
            r = self._session_drive(name, features[rows], None if behavior is None else behavior[rows],
                                    None if pupil is None else pupil[rows])
            rate = rate.index_copy(0, rows, F.pad(r.float(), (0, n_max - n)))
        return {"rate": rate * mask[:, None, :].to(rate.dtype)}  # (B, T, N_max), 0 where masked

    # ------------------------------------------------------------------ loss and metrics
    def _check_burn_in(self, t: int) -> None:
        if self.burn_in >= t:
            raise InputError("batch", f"clips of {t} frames, not more than burn_in={self.burn_in}",
                             "use longer clips or a smaller burn_in")

    def poisson_loss(self, rate: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Poisson NLL ``rate - y log(rate + 1e-8)`` averaged over real neurons and frames >= burn_in."""
        self._check_burn_in(rate.shape[1])
        rate, y = rate[:, self.burn_in:].float(), responses[:, self.burn_in:].float()
        keep = mask[:, None, :].to(rate.dtype).expand_as(rate)
        nll = F.poisson_nll_loss(rate, y, log_input=False, full=False, eps=_EPS, reduction="none")
        return (nll * keep).sum() / keep.sum().clamp(min=1.0)

    def _l1(self, session: torch.Tensor) -> torch.Tensor:
        """Readout L1 of the batch's sessions, each weighted by its share of the batch's rows."""
        ids, counts = torch.unique(session, return_counts=True)
        terms = [self.readouts[self.session_names[i]].l1() * (c / session.numel())
                 for i, c in zip(ids.tolist(), counts.tolist(), strict=True)]
        return torch.stack(terms).sum()

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rate = self(batch)["rate"]
        poisson = self.poisson_loss(rate, batch["responses"], batch["mask"])
        l1 = self._l1(batch["session"])
        return {"loss": poisson + self.l1_weight * l1, "poisson": poisson.detach(), "l1": l1.detach()}

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rate = self(batch)["rate"]
        return {"rate": rate, "responses": batch["responses"].float(), "mask": batch["mask"],
                "session": batch["session"]}

    def validation_epoch_end(self, outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """``r``: single-trial correlation per neuron averaged over neurons (see the module doc);
        ``poisson``: the loss over the validation set; ``r_<session>``: each session's mean r."""
        rates: dict[int, list[np.ndarray]] = {}
        ys: dict[int, list[np.ndarray]] = {}
        for out in outputs:
            self._check_burn_in(out["rate"].shape[1])
            session = out["session"].cpu()
            for s in torch.unique(session).tolist():
                rows = session == s
                n = self.sessions[self.session_names[s]]["n_neurons"]
                rates.setdefault(s, []).append(out["rate"][rows, self.burn_in:, :n].reshape(-1, n).numpy())
                ys.setdefault(s, []).append(out["responses"][rows, self.burn_in:, :n].reshape(-1, n).numpy())
        metrics, all_r, nll_sum, count = {}, [], 0.0, 0
        for s in sorted(rates):
            p = np.concatenate(rates[s]).astype(np.float64)
            y = np.concatenate(ys[s]).astype(np.float64)
            nll_sum += float((p - y * np.log(p + _EPS)).sum())
            count += y.size
            if y.shape[0] < 2:
                continue
            r = pearson_r(y, p)
            all_r.append(r)
            metrics[f"r_{self.session_names[s]}"] = float(r.mean())
        metrics["r"] = float(np.concatenate(all_r).mean()) if all_r else float("nan")
        metrics["poisson"] = nll_sum / max(count, 1)
        return metrics


# ---------------------------------------------------------------------- sessions
def session_specs(sessions: Sequence[NeuronSession], tier: str = "train",
                  pupil_stats: bool = True) -> dict[str, dict]:
    """The ``sessions`` argument of :class:`NeuronModel` from recordings, in their order.

    Per session: ``n_neurons``, ``mean_response`` (each neuron's mean over the frames of the
    ``tier`` trials, for the readout bias), ``n_behavior`` and, with ``pupil_stats`` and eye
    tracking, ``pupil_center_mean`` / ``pupil_center_std`` over the same frames (the
    shifter's standardisation; pass ``pupil_stats=False`` when the dataset already
    standardises pupil_center). The batch's ``session`` index counts sessions in this order.
    """
    specs: dict[str, dict] = {}
    for session in sessions:
        where = session.source or f"session {session.name!r}"
        if session.name in specs:
            raise InputError(where, f"two sessions are named {session.name!r}", "give each session its own name")
        trials = session.trials(tier)
        if len(trials) == 0:
            raise InputError(where, f"no {tier} trials for the mean responses", f"give the session {tier} trials")
        responses = np.concatenate([session.responses[i] for i in trials]).astype(np.float64)
        spec = {"n_neurons": session.n_neurons, "mean_response": responses.mean(0).astype(np.float32).tolist(),
                "n_behavior": int(session.behavior[trials[0]].shape[1])}
        if pupil_stats and session.pupil_center is not None:
            pupil = np.concatenate([session.pupil_center[i] for i in trials]).astype(np.float64)
            spec["pupil_center_mean"] = pupil.mean(0).tolist()
            spec["pupil_center_std"] = np.maximum(pupil.std(0), 1e-6).tolist()
        specs[session.name] = spec
    return specs


# ---------------------------------------------------------------------- factory
def make_core(name: str, **options) -> nn.Module:
    """A core by name: ``conv`` (:class:`Conv3dCore` of ``options``), ``vivit``
    (:class:`~cinebrain.models.vivit.ViViTCore` of ``ViViTConfig(**options)``) or a ViViT
    preset (``vivit-small``, ``vivit-baseline``; ``options`` override the preset's fields)."""
    if name == "conv":
        return Conv3dCore(**options)
    if name == "vivit":
        return vivit.ViViTCore(vivit.ViViTConfig(**options))
    if name in vivit.PRESETS:
        return vivit.ViViTCore(vivit.get_preset(name, **options))
    raise ConfigError("core", f"unknown core {name!r}", f"use one of {', '.join(CORES)}")


def make_neuron_model(core: str, sessions: dict[str, dict], *, core_options: dict | None = None,
                      **options) -> NeuronModel:
    """A :class:`NeuronModel` on the core named ``core`` (see :func:`make_core`); ``options``
    go to NeuronModel. Its ``config`` rebuilds it: ``make_neuron_model(**model.config)``."""
    core_options = dict(core_options or {})
    model = NeuronModel(make_core(core, **core_options), sessions, **options)
    model.config = {"core": core, "core_options": core_options, **model.config}
    return model


# --------------------------------------------------------------------------- whole trials
def behavior_gain(model, sessions, trials: dict[str, np.ndarray], stats, column: str,
                  delta: float = 0.5, **predict) -> dict[str, np.ndarray]:
    """The model's learned gain of every neuron on one behaviour variable: the mean over the
    frames of ``trials`` of ``d log(rate) / d behaviour``, in the variable's own units
    (e.g. per cm/s of running), by central differences: every frame's value of ``column``
    moved by ``+-delta`` training standard deviations. ``{session: (N,)}``; NaN for a
    session without that column. ``predict``: options of :func:`predict_trials`."""
    out = {}
    for s in sessions:
        names = list(s.behavior_names or [])
        if column not in names:
            out[s.name] = np.full(s.n_neurons, np.nan, np.float32)
            continue
        j = names.index(column)
        std = float(np.asarray(stats[s.name].behavior_std)[j]) or 1.0
        logs = []
        for sign in (1.0, -1.0):
            offset = np.zeros(len(names), np.float32)
            offset[j] = sign * delta
            pred = predict_trials(model, [s], {s.name: trials[s.name]}, stats,
                                  behavior_offset={s.name: offset}, **predict)[s.name]
            logs.append(np.log(np.maximum(np.concatenate(pred), 1e-6)))
        out[s.name] = ((logs[0] - logs[1]).mean(0) / (2 * delta * std)).astype(np.float32)
    return out


def readout_centres(model, sessions, trials: dict[str, np.ndarray], stats) -> dict[str, np.ndarray]:
    """Where each neuron reads the screen on average over the frames of ``trials``: its
    readout's mean position plus the eye shifter's mean shift, ``{session: (N, 2)}`` in
    screen coordinates (x, y in [-1, 1], pixel centres at ``(i + .5) / n * 2 - 1``)."""
    ds, items = _trial_inputs(sessions, trials, stats)
    out = {}
    with torch.no_grad():
        for k, s in enumerate(sessions):
            mu = model.readouts[s.name].mu.detach().float().cpu().numpy()
            shifters = getattr(model, "shifters", None)
            if shifters is not None:
                rows = np.concatenate([np.arange(a, b) for kk, _, a, b in items if kk == k])
                pupil = torch.from_numpy(np.ascontiguousarray(ds.pupil_center[rows]))[None]
                dev = next(shifters[s.name].parameters()).device
                shift = shifters[s.name](pupil.to(dev)).float().mean(dim=(0, 1)).cpu().numpy()
                mu = mu + shift
            out[s.name] = mu.astype(np.float32)
    return out


def _trial_inputs(sessions: Sequence[NeuronSession], trials: dict[str, np.ndarray], stats):
    """Normalised inputs of whole trials, exactly as the training windows are normalised
    (a one-frame NeuronClipDataset stacks them): ``[(session index, trial, rows)]`` and the
    dataset."""
    from cinebrain.data.neurons import NeuronClipDataset

    ds = NeuronClipDataset(sessions, trials, frames=1, stats=stats)
    out = []
    w = ds.windows
    for k, s in enumerate(sessions):
        for t in trials[s.name]:
            rows = w[(w[:, 0] == k) & (w[:, 1] == int(t)), 3]
            out.append((k, int(t), int(rows.min()), int(rows.max()) + 1))
    return ds, out


def _forward(model, ds, k: int, a: int, b: int, behavior: np.ndarray, pupil: np.ndarray,
             device) -> np.ndarray:
    """Rates ``(b - a, N)`` of session ``k`` from stacked rows ``[a, b)`` of ``ds``."""
    n = int(ds.n_neurons[k])
    mask = np.zeros((1, ds.n_max), dtype=bool)
    mask[0, :n] = True
    batch = {
        "video": torch.from_numpy(ds.video[a:b][None, None].copy()),  # (1, 1, T, H, W)
        "behavior": torch.from_numpy(behavior[None].copy()),  # (1, T, n_b)
        "pupil_center": torch.from_numpy(pupil[None].copy()),  # (1, T, 2)
        "mask": torch.from_numpy(mask),
        "session": torch.tensor([k], dtype=torch.int64),
    }
    batch = {key: v.to(device) for key, v in batch.items()}
    with torch.no_grad():
        rate = model(batch)["rate"]
    return rate[0, :, :n].float().cpu().numpy()


def _windows(n: int, size: int | None, burn_in: int) -> list[tuple[int, int, int]]:
    """``(start, stop, keep_from)`` of the prediction windows of an ``n``-frame trial."""
    if size is None or n <= size:
        return [(0, n, 0)]
    step = size - burn_in
    starts = list(range(0, n - size + 1, step))
    if starts[-1] + size < n:
        starts.append(n - size)
    out, covered = [], 0
    for s in starts:
        out.append((s, s + size, covered))
        covered = s + size
    return out


def predict_trials(model, sessions, trials: dict[str, np.ndarray], stats, *,
                   predict_frames: int | None = None, burn_in: int = 0,
                   behavior_order: dict[str, np.ndarray] | None = None,
                   behavior_offset: dict[str, np.ndarray] | None = None,
                   eye_order: dict[str, np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """Predicted rates of whole trials, ``{session: [(T_i, N)]}`` in the order of ``trials``.

    ``predict_frames=None`` runs every trial in one pass; otherwise windows of that many
    frames, each after the first starting ``burn_in`` frames before the first frame it
    contributes. ``behavior_order``: per session, for the i-th trial, the position (in
    ``trials``) of the trial whose behaviour (running, pupil size) it gets (a shuffle);
    ``eye_order`` likewise for the eye position (the stimulus' geometry, kept by default).
    ``behavior_offset``: per session, ``(n_b,)`` added to every frame's normalised
    behaviour (a probe of the modulator, see :func:`behavior_gain`)."""
    device = next(model.parameters()).device
    ds, items = _trial_inputs(sessions, trials, stats)
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in sessions}
    by_session: dict[int, list[tuple[int, int]]] = {}
    for k, _, a, b in items:
        by_session.setdefault(k, []).append((a, b))
    for k, rows in by_session.items():
        name = sessions[k].name
        order = np.arange(len(rows)) if behavior_order is None else behavior_order[name]
        eyes = np.arange(len(rows)) if eye_order is None else eye_order[name]
        for i, (a, b) in enumerate(rows):
            src_a, src_b = rows[int(order[i])]
            eye_a, eye_b = rows[int(eyes[i])]
            if src_b - src_a != b - a or eye_b - eye_a != b - a:
                raise ValueError("a behaviour shuffle must pair trials of equal length")
            behavior, pupil = ds.behavior[src_a:src_b], ds.pupil_center[eye_a:eye_b]
            if behavior_offset is not None and name in behavior_offset:
                behavior = (behavior + np.asarray(behavior_offset[name], np.float32)).astype(np.float32)
            n = b - a
            pred = np.empty((n, int(ds.n_neurons[k])), dtype=np.float32)
            for start, stop, keep in _windows(n, predict_frames, burn_in):
                r = _forward(model, ds, k, a + start, a + stop, behavior[start:stop],
                             pupil[start:stop], device)
                pred[keep:stop] = r[keep - start:]
            out[name].append(pred)
    return out
