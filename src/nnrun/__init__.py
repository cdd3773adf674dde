"""nnrun: a command-line experiment runner for the fundamentals of deep learning."""

__version__ = "0.1.0"
