"""bitsandbytes-style 8-bit optimizer names: thin aliases of the fused classes with
``state_bits=8`` (any fusedopt optimizer takes ``state_bits=8`` directly).

They take bitsandbytes' argument names where bitsandbytes has them (keyword-only here):

- ``optim_bits``: 8 (default) or 32 (32-bit states); 16 is fusedopt's bfloat16 states;
- ``min_8bit_size`` (4096): params with fewer elements keep 32-bit states;
- ``block_wise``: only True (block-wise quantization, blocks of ``block_size`` = 256) exists here;
- ``percentile_clipping``: only 100 (no clipping) is supported; other values are refused;
- ``is_paged``: paged states are not implemented; True is refused;
- ``args``: bitsandbytes' config object; must be None.

Semantics are fusedopt's (= torch.optim's) except where noted: as in bitsandbytes, ``Adam8bit``'s
weight decay is decoupled (p *= 1 - lr * weight_decay), like AdamW8bit with another default.
"""
from __future__ import annotations

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lion import Lion
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Adam8bit", "AdamW8bit", "Lion8bit", "SGD8bit", "RMSprop8bit", "Adagrad8bit"]

_BNB_DOC = """
    8-bit states as in Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"
    (docs/algorithms.md §19). bitsandbytes' options (keyword-only): ``optim_bits`` (8; 32 keeps
    32-bit states, 16 bfloat16 ones), ``min_8bit_size`` (4096: smaller params keep 32-bit states),
    ``block_size`` (256 elements per absmax block), ``block_wise`` (True only), ``percentile_clipping``
    (100 only: no clipping), ``is_paged`` (False only), ``args`` (None only). Other keywords go to the
    32-bit class.
"""


def _bnb_options(cls: str, optim_bits, args, percentile_clipping, block_wise, is_paged) -> int:
    if args is not None:
        raise ValueError(f"fusedopt.{cls}: bitsandbytes' `args` config object is not supported; pass the options "
                         "as keyword arguments")
    if percentile_clipping != 100:
        raise ValueError(f"fusedopt.{cls}: percentile_clipping={percentile_clipping} is not supported (only 100, "
                         "i.e. no clipping); clip gradients before step() instead")
    if block_wise is not True:
        raise ValueError(f"fusedopt.{cls}: block_wise={block_wise!r} is not supported; fusedopt's 8-bit states are "
                         "always block-wise")
    if is_paged:
        raise ValueError(f"fusedopt.{cls}: paged optimizer states (is_paged=True) are not implemented")
    if optim_bits not in (8, 16, 32):
        raise ValueError(f"fusedopt.{cls}: optim_bits must be 8, 16 or 32, got {optim_bits!r}")
    return optim_bits


class Adam8bit(Adam):
    __doc__ = """bitsandbytes.optim.Adam8bit: Adam with 8-bit block-wise states and decoupled weight decay.

    Arguments: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad`` as fusedopt.Adam.
""" + _BNB_DOC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 optim_bits=8, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=False, block_size=256, **kwargs):
        bits = _bnb_options("Adam8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        kwargs.setdefault("decoupled_weight_decay", True)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, state_bits=bits,
                         min_8bit_size=min_8bit_size, block_size=block_size, **kwargs)


class AdamW8bit(AdamW):
    __doc__ = """bitsandbytes.optim.AdamW8bit: torch AdamW with 8-bit block-wise states.

    Arguments: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad`` as fusedopt.AdamW.
""" + _BNB_DOC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 optim_bits=8, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=False, block_size=256, **kwargs):
        bits = _bnb_options("AdamW8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, state_bits=bits,
                         min_8bit_size=min_8bit_size, block_size=block_size, **kwargs)


class Lion8bit(Lion):
    __doc__ = """bitsandbytes.optim.Lion8bit: Lion with 8-bit block-wise states.

    Arguments: ``lr``, ``betas``, ``weight_decay`` as fusedopt.Lion.
""" + _BNB_DOC

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, *, optim_bits=8, args=None,
                 min_8bit_size=4096, percentile_clipping=100, block_wise=True, is_paged=False, block_size=256,
                 **kwargs):
        bits = _bnb_options("Lion8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        super().__init__(params, lr, betas, weight_decay, state_bits=bits, min_8bit_size=min_8bit_size,
                         block_size=block_size, **kwargs)


class SGD8bit(SGD):
    __doc__ = """bitsandbytes.optim.SGD8bit: SGD with an 8-bit momentum buffer (momentum=0 keeps no state).

    Arguments: ``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``nesterov`` as fusedopt.SGD.
""" + _BNB_DOC

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, optim_bits=8,
                 args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True, is_paged=False,
                 block_size=256, **kwargs):
        bits = _bnb_options("SGD8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov, state_bits=bits,
                         min_8bit_size=min_8bit_size, block_size=block_size, **kwargs)


class RMSprop8bit(RMSprop):
    __doc__ = """bitsandbytes.optim.RMSprop8bit: RMSprop with 8-bit block-wise states.

    Arguments: ``lr``, ``alpha``, ``eps``, ``weight_decay``, ``momentum``, ``centered`` as fusedopt.RMSprop.
""" + _BNB_DOC

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 optim_bits=8, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=False, block_size=256, **kwargs):
        bits = _bnb_options("RMSprop8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        super().__init__(params, lr, alpha, eps, weight_decay, momentum, centered, state_bits=bits,
                         min_8bit_size=min_8bit_size, block_size=block_size, **kwargs)


class Adagrad8bit(Adagrad):
    __doc__ = """bitsandbytes.optim.Adagrad8bit: Adagrad with an 8-bit (unsigned) sum.

    Arguments: ``lr``, ``lr_decay``, ``weight_decay``, ``initial_accumulator_value``, ``eps`` as fusedopt.Adagrad.
""" + _BNB_DOC

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *,
                 optim_bits=8, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True,
                 is_paged=False, block_size=256, **kwargs):
        bits = _bnb_options("Adagrad8bit", optim_bits, args, percentile_clipping, block_wise, is_paged)
        super().__init__(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps, state_bits=bits,
                         min_8bit_size=min_8bit_size, block_size=block_size, **kwargs)
