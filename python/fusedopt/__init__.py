"""fusedopt: fused multi-tensor optimizers for PyTorch (C++/OpenMP/SIMD on CPU, CUDA on GPU)."""
from __future__ import annotations

from . import _ops  # noqa: F401  (loads the extension, registers torch.ops.fusedopt.*)
from . import functional  # noqa: F401
from . import reduce  # noqa: F401
from .reduce import clip_grad_norm_, get_total_norm, clip_grads_with_norm_
from . import curvature
from .curvature import hessian  # noqa: F401
from .curvature.lanczos_lr import LanczosLR
from .curvature.gradinit import gradinit

# the old module paths of the curvature tools keep working (import fusedopt.hessian, ...)
import sys as _sys
for _m in ("hessian", "lanczos_lr", "gradinit"):
    _sys.modules[f"{__name__}.{_m}"] = _sys.modules[f"{__name__}.curvature.{_m}"]
from .optim.adam import Adam, AdamW
from .optim.adamax import Adamax
from .optim.base import FusedOptimizer
from .optim.nadam import NAdam
from .optim.radam import RAdam
from .optim.sgd import SGD
from .optim.rmsprop import RMSprop
from .optim.adagrad import Adagrad
from .optim.adadelta import Adadelta
from .optim.adabelief import AdaBelief
from .optim.acprop import ACProp
from .optim.diffgrad import DiffGrad
from .optim.padam import Padam
from .optim.signsgd import SignSGD
from .optim.pnm import PNM, AdaPNM
from .optim.adan import Adan
from .optim.lion import Lion
from .wrappers import Gadam, GadamX, IterateAveraging, Lookahead, update_bn
from .schedules import IALR, InverseSqrtWarmup, LinearWarmup, scale_lr
from .optim.bnb import Adagrad8bit, Adam8bit, AdamW8bit, Lion8bit, RMSprop8bit, SGD8bit
from .q8 import dequantize_blockwise, dequantize_state_dict, qmap, quantize_blockwise, register_32bit_state, state_nbytes
from . import nn  # noqa: F401
from .optim.lamb import LAMB, FusedLAMB
from .optim.lars import LARS
from .optim.adafactor import Adafactor, AdafactorTorch
from .optim.koala import KOALA, MomentumKOALA, VanillaKOALA
from .optim.ademamix import AdEMAMix
from .optim.schedulefree import AdamWScheduleFree
from .factory import create_optimizer, list_optimizers, override
from .offload import CPUOffloadOptimizer

__version__ = "0.1.0"
__all__ = ["Adam", "AdamW", "Adamax", "RAdam", "NAdam", "FusedOptimizer", "build_info", "functional"]
__all__ += ["SGD", "RMSprop", "Adagrad", "Adadelta"]
__all__ += ["AdaBelief", "ACProp", "DiffGrad", "Padam", "SignSGD"]
__all__ += ["PNM", "AdaPNM", "Adan", "Lion"]
__all__ += ["Lookahead", "IterateAveraging", "Gadam", "GadamX", "update_bn"]
__all__ += ["LinearWarmup", "InverseSqrtWarmup", "IALR", "scale_lr"]
__all__ += ["LAMB", "FusedLAMB", "LARS"]
__all__ += ["Adafactor", "AdafactorTorch"]
__all__ += ["KOALA", "VanillaKOALA", "MomentumKOALA"]
__all__ += ["AdEMAMix", "AdamWScheduleFree"]
__all__ += ["clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_", "reduce"]
__all__ += ["hessian", "LanczosLR", "gradinit", "curvature"]
__all__ += ["Adam8bit", "AdamW8bit", "Lion8bit", "SGD8bit", "RMSprop8bit", "Adagrad8bit", "nn"]
__all__ += ["quantize_blockwise", "dequantize_blockwise", "qmap", "register_32bit_state", "dequantize_state_dict",
            "state_nbytes"]
__all__ += ["create_optimizer", "list_optimizers", "override", "CPUOffloadOptimizer"]


def build_info() -> dict:
    """Version, backends compiled, CUDA archs, the CPU SIMD level in use (`cpu_isa`) and the 8-bit state
    decoder it runs on this CPU (`cpu_q8_decoder`: avx512-vbmi, avx512-permute, avx2-gather or scalar),
    OpenMP."""
    import json

    import torch

    info = json.loads(torch.ops.fusedopt.build_info())
    for key in ("backends", "cpu_isas_compiled"):
        info[key] = tuple(info[key])

    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info
