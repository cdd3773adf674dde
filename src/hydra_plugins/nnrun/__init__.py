"""nnrun's Hydra plugins: its sweeper (hydra/sweeper=nnrun, the default) and its launchers that train a sweep as
stacks of models (hydra/launcher=vectorized, vectorized_slurm)."""
