import numpy as np
from sklearn.linear_model import Ridge

from cinebrain.linear.reduce import fit_band_rotation


def test_rotation_preserves_ridge_predictions_on_every_subset_of_rows():
    rng = np.random.default_rng(0)
    n, sizes = 60, [150, 20, 90]
    X = rng.standard_normal((n + 30, sum(sizes))).astype(np.float32)
    Y = rng.standard_normal((n + 30, 4)).astype(np.float32)
    train, test = np.arange(n), np.arange(n, n + 30)
    rot = fit_band_rotation(X[train], sizes)
    assert rot.reduced_sizes[1] == 20 and rot.reduced_sizes[0] <= n and rot.reduced_sizes[2] <= n
    Z = rot.transform(X)
    # band weights scale whole bands; rotation within a band leaves predictions unchanged
    gammas = [0.3, 2.0, 1.1]
    scale = np.concatenate([np.full(s, np.sqrt(g)) for s, g in zip(sizes, gammas, strict=True)])
    scale_z = np.concatenate([np.full(k, np.sqrt(g)) for k, g in zip(rot.reduced_sizes, gammas, strict=True)])
    for rows in (train, train[10:50]):  # the full training set and a CV fold inside it
        full = Ridge(alpha=3.0).fit(X[rows] * scale, Y[rows])
        red = Ridge(alpha=3.0).fit(Z[rows] * scale_z, Y[rows])
        np.testing.assert_allclose(red.predict(Z[test] * scale_z), full.predict(X[test] * scale),
                                   rtol=1e-3, atol=1e-4)
    # and coefficients map back to the original features
    full = Ridge(alpha=3.0).fit(X[train], Y[train])
    red = Ridge(alpha=3.0).fit(Z[train], Y[train])
    np.testing.assert_allclose(rot.coef_back(red.coef_.T), full.coef_.T, rtol=1e-3, atol=1e-4)
