"""Triton kernels. Each kernel has a pure-PyTorch ``_ref`` twin that its tests compare against."""
