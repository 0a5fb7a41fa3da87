"""Comparison helper of the parity tests (own modules vs PyTorch transformers/diffusers)."""

import numpy as np


def assert_rel_close(got, want, tol: float = 1e-5, what: str = "") -> float:
  """max |got − want| ≤ tol · max |want| (relative to the output's scale, so near-zero
  elements do not make a float32 comparison flaky); returns the relative error."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
  scale = float(np.max(np.abs(want)))
  assert scale > 0, f"{what}: the reference is all zeros"
  error = float(np.max(np.abs(got - want))) / scale
  assert error <= tol, f"{what}: relative error {error:.2e} > {tol:.0e}"
  return error
