"""Curvature and initialisation tools, pure PyTorch on any device (no fused kernels): Hessian-vector
products, Lanczos / stochastic Lanczos quadrature, Hutchinson traces and R_med (hessian), the Lanczos
learning-rate learner (lanczos_lr.LanczosLR) and GradInit (gradinit.gradinit). Also importable under
their old paths: fusedopt.hessian, fusedopt.LanczosLR, fusedopt.gradinit."""
from . import hessian  # noqa: F401
from .gradinit import gradinit
from .lanczos_lr import LanczosLR

__all__ = ["hessian", "LanczosLR", "gradinit"]
