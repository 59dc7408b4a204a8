"""fusedopt: fused multi-tensor optimizers for PyTorch (C++/OpenMP/SIMD on CPU, CUDA on GPU)."""
from __future__ import annotations

from . import _ops  # noqa: F401  (loads the extension, registers torch.ops.fusedopt.*)
from . import functional  # noqa: F401
from . import reduce  # noqa: F401
from .reduce import clip_grad_norm_, get_total_norm, clip_grads_with_norm_
from ._C import build_info as _build_info
from .optim.adam import Adam, Adamax, AdamW
from .optim.base import FusedOptimizer
from .optim.nadam import NAdam
from .optim.radam import RAdam
from .optim.sgd import SGD
from .optim.rmsprop import RMSprop
from .optim.adagrad import Adagrad
from .optim.adadelta import Adadelta
from .optim.belief import ACProp, AdaBelief
from .optim.diffgrad import DiffGrad
from .optim.padam import Padam
from .optim.signsgd import SignSGD
from .optim.pnm import PNM, AdaPNM, Adan, Lion
from .optim.adafactor import Adafactor, AdafactorTorch

__version__ = "0.1.0"
__all__ = ["Adam", "AdamW", "Adamax", "RAdam", "NAdam", "FusedOptimizer", "build_info", "functional"]
__all__ += ["SGD", "RMSprop", "Adagrad", "Adadelta"]
__all__ += ["AdaBelief", "ACProp", "DiffGrad", "Padam", "SignSGD"]
__all__ += ["PNM", "AdaPNM", "Adan", "Lion"]
__all__ += ["Adafactor", "AdafactorTorch"]
__all__ += ["clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_", "reduce"]


def build_info() -> dict:
    """Version, backends compiled, CUDA archs, the CPU SIMD level in use, OpenMP."""
    info = dict(_build_info())
    import torch

    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info
