"""minivar: VAR and M-VAR, next-scale prediction, readable and runnable on any CPU."""
__version__ = "0.1.0"
