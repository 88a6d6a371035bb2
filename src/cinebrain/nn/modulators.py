"""Behaviour modulators of a neuron model: running, pupil size and the like change responses.

In the neuralpredictors composition (core + readout + modulator) these are the modulators.
Each consumes the behaviour frame by frame, ``(B, T, n_behavior)``, never averaged over time,
and is strictly causal: its output at frame t depends on behaviour at frames <= t only.

- :class:`GRUModulator`: a GRU over the behaviour -> a per-neuron drive ``(B, T, N)`` added to
  the readout's drive *before* the output nonlinearity (with an exponential-like
  nonlinearity this is a log-gain);
- :class:`MLPGain`: ``exp(MLP(b_t))`` per neuron and frame, ``(B, T, N)``, *multiplying* the
  rate after the output nonlinearity (a positive gain, so the rate stays positive);
- :class:`ConvGRUModulator`: a convolutional GRU over the core's feature map ``(B, C, T, h, w)``
  whose input at frame t is that frame's features concatenated with the behaviour broadcast
  over space; it returns a modulated feature map of the same shape for the readout.

Every modulator's last layer is zero-initialised: training starts from no modulation.
"""

from __future__ import annotations

import torch
from torch import nn

from cinebrain.errors import ConfigError


def _check_behavior(behavior: torch.Tensor, n_behavior: int, where: str) -> None:
    if behavior.ndim != 3 or behavior.shape[-1] != n_behavior:
        raise ValueError(f"{where} expects behaviour (B, T, {n_behavior}), got {tuple(behavior.shape)}")


class GRUModulator(nn.Module):
    """Behaviour (B, T, n_behavior) -> per-neuron drive (B, T, N), added before the nonlinearity.

    A ``layers``-layer GRU of ``hidden`` units runs forward in time over the behaviour (so
    frame t sees behaviour <= t), then a Linear(hidden, n_neurons), zero-initialised.
    """

    def __init__(self, n_behavior: int, n_neurons: int, hidden: int = 16, layers: int = 1):
        super().__init__()
        if n_behavior < 1 or n_neurons < 1 or hidden < 1 or layers < 1:
            raise ConfigError("modulator", "n_behavior, n_neurons, hidden and layers must be >= 1, got "
                              f"{n_behavior}, {n_neurons}, {hidden}, {layers}")
        self.n_behavior = n_behavior
        self.gru = nn.GRU(n_behavior, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, n_neurons)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        _check_behavior(behavior, self.n_behavior, "GRUModulator")
        h, _ = self.gru(behavior)  # (B, T, hidden)
        return self.out(h)  # (B, T, N)


class MLPGain(nn.Module):
    """Behaviour (B, T, n_behavior) -> multiplicative gain exp(MLP(b_t)) (B, T, N), frame by frame.

    MLP: Linear(n_behavior, hidden), ELU, Linear(hidden, n_neurons) (zero-initialised: gain 1).
    The gain multiplies the rate after the output nonlinearity.
    """

    def __init__(self, n_behavior: int, n_neurons: int, hidden: int = 16):
        super().__init__()
        if n_behavior < 1 or n_neurons < 1 or hidden < 1:
            raise ConfigError("modulator", "n_behavior, n_neurons and hidden must be >= 1, got "
                              f"{n_behavior}, {n_neurons}, {hidden}")
        self.n_behavior = n_behavior
        self.mlp = nn.Sequential(nn.Linear(n_behavior, hidden), nn.ELU(), nn.Linear(hidden, n_neurons))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        _check_behavior(behavior, self.n_behavior, "MLPGain")
        return torch.exp(self.mlp(behavior))  # (B, T, N)


class ConvGRUCell(nn.Module):
    """One step of a convolutional GRU (Ballas et al. 2016) on (B, C_in, h, w) frames.

    ``z = sigmoid(W_z * [x, h])``, ``r = sigmoid(W_r * [x, h])``,
    ``n = tanh(W_n * [x, r h])``, ``h' = (1 - z) n + z h``; each ``*`` a same-padded
    ``kernel`` x ``kernel`` convolution. The state starts at zero.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel: int = 3):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ConfigError("modulator.kernel", f"must be an odd number >= 1, got {kernel}")
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * n + z * h  # (B, hidden, h, w)


class ConvGRUModulator(nn.Module):
    """Modulate a feature map by behaviour: (B, C, T, h, w), (B, T, n_b) -> (B, C, T, h, w).

    Frame by frame, a :class:`ConvGRUCell` of ``hidden`` channels takes ``[features_t,
    behaviour_t broadcast over h x w]``; the modulated frame is ``features_t + W * state_t``
    with ``W`` a 1x1 convolution (zero-initialised, so the map starts unchanged). Causal:
    frame t's output depends on features and behaviour at frames <= t only.
    """

    def __init__(self, n_behavior: int, channels: int, hidden: int | None = None, kernel: int = 3):
        super().__init__()
        if n_behavior < 1 or channels < 1:
            raise ConfigError("modulator", f"n_behavior and channels must be >= 1, got {n_behavior}, {channels}")
        hidden = channels if hidden is None else hidden
        self.n_behavior, self.channels = n_behavior, channels
        self.cell = ConvGRUCell(channels + n_behavior, hidden, kernel)
        self.out = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, behavior: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"ConvGRUModulator expects {self.channels} channels, got {c}")
        _check_behavior(behavior, self.n_behavior, "ConvGRUModulator")
        if behavior.shape[:2] != (b, t):
            raise ValueError(f"behaviour {tuple(behavior.shape)} does not match features (B, T) = ({b}, {t})")
        state, frames = None, []
        for i in range(t):
            x = features[:, :, i]  # (B, C, h, w)
            beh = behavior[:, i, :, None, None].expand(b, self.n_behavior, h, w).to(x.dtype)
            state = self.cell(torch.cat([x, beh], dim=1), state)
            frames.append(x + self.out(state))
        return torch.stack(frames, dim=2)  # (B, C, T, h, w)
