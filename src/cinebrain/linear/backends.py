"""Array backends for the ridge solvers: numpy (default) and torch (CPU or CUDA).

The solvers are written once against this small interface. Heavy arrays (the design
matrix, per-fold decompositions, chunks of targets, the coefficient buffer) live on the
backend; small bookkeeping arrays (losses, selected hyper-parameters) are numpy on the host.
Arrays are float32; Gram matrices and their eigendecompositions are float64, because
squaring the design matrix squares its condition number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

BACKENDS = ("numpy", "torch")


def _eigh_cpu(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAPACK syevd on one thread: threaded divide-and-conquer gains little at these sizes
    and collapses (10x slower) when the cores are shared with other processes."""
    with threadpool_limits(1, user_api="blas"):
        evals, evecs = scipy.linalg.eigh(gram, driver="evd", check_finite=False)
    np.maximum(evals, 0.0, out=evals)
    return evals, evecs


class NumpyBackend:
    """numpy + scipy LAPACK (OpenBLAS)."""

    name = "numpy"

    def __init__(self, device: str = "cpu"):
        if device != "cpu":
            raise ValueError(f"backend 'numpy' runs on device 'cpu' only, got device={device!r}; "
                             "use backend='torch' for GPUs")
        self.device = device
        self.on_cpu = True

    def asarray(self, x: Any, dtype=np.float32) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, shape, dtype=np.float32) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def float32(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False)

    def float64(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64, copy=False)

    def take_rows(self, x: np.ndarray, idx: np.ndarray, out=None) -> np.ndarray:
        """Rows ``idx`` of ``x`` (into ``out``, a C-contiguous buffer, when given)."""
        if out is None:
            return x[idx]
        return np.take(x, idx, axis=0, out=out)

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``a @ b`` written into the buffer ``out``."""
        return np.matmul(a, b, out=out)

    def subtract(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``a - b`` written into the buffer ``out``."""
        return np.subtract(a, b, out=out)

    def indices(self, idx: np.ndarray) -> np.ndarray:
        return idx

    def sum_rows(self, x: np.ndarray) -> np.ndarray:
        """Column sums accumulated in float64, shape ``(n_columns,)``."""
        return x.sum(axis=0, dtype=np.float64)

    def sum_squares_axis1(self, x: np.ndarray) -> np.ndarray:
        """``(a, n, c) -> (a, c)`` sums of squares over the middle axis (float64 out).

        One fused pass (``einsum``, float32 accumulation over the ``n`` validation rows,
        which adds ~1e-7 relative to the float32 residuals' own error; the solvers re-score
        near-ties in float64): squaring in place and summing with a float64 cast took two
        passes and cost half as much as the GEMM that made ``x``."""
        return np.einsum("anc,anc->ac", x, x).astype(np.float64)

    def eigh(self, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (clipped at 0) and eigenvectors of a symmetric float64 matrix."""
        return _eigh_cpu(gram)

    def qr(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Thin QR of ``a`` computed in float64: ``Q`` ``(n, m)``, ``R`` ``(m, k)``, m = min(n, k)."""
        return np.linalg.qr(a.astype(np.float64))


class TorchBackend:
    """torch on CPU (MKL) or CUDA."""

    name = "torch"

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"unknown torch device {device!r}: {err}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but CUDA is not available; "
                             "use device='cpu'")
        self.on_cpu = self.device.type == "cpu"
        self._dtypes = {np.float32: torch.float32, np.float64: torch.float64,
                        np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

    def asarray(self, x: Any, dtype=np.float32):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=self._dtypes[dtype])
        x = np.asarray(x, dtype=dtype)
        if not x.flags.writeable or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return torch.from_numpy(x).to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def zeros(self, shape, dtype=np.float32):
        return self.torch.zeros(shape, dtype=self._dtypes[dtype], device=self.device)

    def empty(self, shape, dtype=np.float32):
        return self.torch.empty(shape, dtype=self._dtypes[dtype], device=self.device)

    def float32(self, x):
        return x.to(self.torch.float32)

    def float64(self, x):
        return x.to(self.torch.float64)

    def take_rows(self, x, idx: np.ndarray, out=None):
        idx = self.torch.as_tensor(idx, device=x.device)
        if out is None:
            return x[idx]
        return self.torch.index_select(x, 0, idx, out=out)

    def matmul(self, a, b, out):
        return self.torch.matmul(a, b, out=out)

    def subtract(self, a, b, out):
        return self.torch.sub(a, b, out=out)

    def indices(self, idx: np.ndarray):
        return self.torch.as_tensor(idx, device=self.device)

    def sum_rows(self, x):
        return x.sum(dim=0, dtype=self.torch.float64)

    def sum_squares_axis1(self, x):
        x.mul_(x)
        return x.sum(dim=1, dtype=self.torch.float64)

    def eigh(self, gram):
        if self.device.type == "cpu":
            evals, evecs = _eigh_cpu(gram.numpy())
            return self.torch.from_numpy(evals), self.torch.from_numpy(evecs)
        evals, evecs = self.torch.linalg.eigh(gram)
        return evals.clamp_(min=0.0), evecs

    def qr(self, a):
        Q, R = self.torch.linalg.qr(a.to(self.torch.float64))  # LAPACK's column-major layout
        return Q.contiguous(), R.contiguous()


def get_backend(name: str = "numpy", device: str = "cpu"):
    """Backend object for ``name`` in :data:`BACKENDS` on ``device``."""
    if name == "numpy":
        return NumpyBackend(device)
    if name == "torch":
        return TorchBackend(device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
