"""Triton kernels (installed as ``minivar.kernels``). Each kernel has a pure-PyTorch ``_ref`` twin."""
