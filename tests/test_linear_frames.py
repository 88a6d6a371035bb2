import numpy as np
import pytest
from sklearn.linear_model import Ridge

from cinebrain.errors import InputError
from cinebrain.linear import frames as lf


def test_impulse_is_causal_and_stays_in_its_trial():
    videos = [np.zeros((10, 4, 4), np.float32) for _ in range(2)]
    videos[0][7, 0, 0] = 1.0
    x = lf.frame_design(videos, delays=range(4), factor=2)
    rows = np.flatnonzero(np.abs(x).sum(1))
    assert list(rows) == [7, 8, 9]  # t..t+k within trial 0, nothing in trial 1 (rows 10..19)
    for d in range(3):
        assert x[7 + d, d * 4] == pytest.approx(0.25)  # block average of a 2x2 cell
    with pytest.raises(InputError):
        lf.delay_trial(np.ones((5, 2)), [-1])


def test_fit_recovers_linear_rf_and_matches_sklearn():
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(80, 8, 8)).astype(np.float32) for _ in range(6)]
    delays = (0, 1, 2)
    x = lf.frame_design(videos, delays, factor=2)
    w = np.zeros((x.shape[1], 2), np.float32)
    w[5, 0], w[16 + 3, 0], w[32 + 9, 1] = 2.0, -1.0, 1.5
    y = x @ w + 0.05 * rng.normal(size=(x.shape[0], 2))
    n = [len(v) for v in videos]
    resp = np.split(y.astype(np.float32), np.cumsum(n)[:-1])
    m = lf.fit_frame_ridge(videos, resp, delays=delays, alphas=[1e-2, 1.0, 1e3], factor=2, n_folds=3)
    np.testing.assert_allclose(m.model.coef_.reshape(w.shape) if m.model.coef_.shape == w.shape else m.model.coef_.T, w, atol=0.05)
    alpha = float(np.ravel(m.model.best_alphas_)[0])
    sk = Ridge(alpha=alpha).fit(x, y[:, 0])
    coef = m.model.coef_ if m.model.coef_.shape == w.shape else m.model.coef_.T
    np.testing.assert_allclose(coef[:, 0], sk.coef_, atol=1e-3)
    pred = m.predict(videos[:2])
    assert [len(p) for p in pred] == [80, 80]
    r = np.corrcoef(pred[0][:, 1], resp[0][:, 1])[0, 1]
    assert r > 0.99
