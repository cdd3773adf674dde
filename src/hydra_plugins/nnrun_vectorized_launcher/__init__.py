"""nnrun's vectorized launcher for Hydra: `nnrun train -m hydra/launcher=vectorized ...`."""
