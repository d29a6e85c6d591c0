"""Max absolute difference, array by array, between two .npz files (restore_predict / savedmodel_check)."""

import sys

import numpy as np

a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
for k in a.files:
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    if x.shape != y.shape:
        print(f"{k}: shape {x.shape} vs {y.shape}")
        continue
    d = np.abs(x - y).max() if x.size else 0.0
    print(f"{k}: shape {x.shape} max|diff| {d:.3g} (max|value| {np.abs(x).max() if x.size else 0:.3g})")
