"""Vectorized sweeps: K networks of one shape trained as one stacked model, each with its own seed and numbers.

`optim` holds the update rules over stacked tensors, `model` the stacked MLP and per-model losses, `trainer`
the loop (the engine's loop, K models at a time) and `batching` which sweep jobs can share one stack.
"""
