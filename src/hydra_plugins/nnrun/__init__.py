"""nnrun's Hydra plugins: its sweeper (hydra/sweeper=nnrun, the default) and its launchers that train a sweep as
stacks of models (hydra/launcher=vectorized, vectorized_slurm). Their modules go without `from __future__ import
annotations`: Hydra imports plugins outside sys.modules, where dataclass cannot resolve string annotations."""
