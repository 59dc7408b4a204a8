"""Hugging Face Trainer (transformers 5.x) with fusedopt optimizers; Trainer itself is unchanged.

- **A class and its kwargs, or an optimizer**: ``Trainer(optimizer_cls_and_kwargs=(fusedopt.AdamW,
  {"lr": 3e-4, "state_bits": 8}))`` or ``Trainer(optimizers=(opt, sched))`` need nothing from here.
  Trainer builds its decay / no-decay groups, saves ``optimizer.state_dict()`` in each checkpoint and
  loads it on ``resume_from_checkpoint`` (8-bit codes and overrides included).
- **Embeddings in 32 bits.** For bitsandbytes 8-bit optimizers Trainer keeps every ``nn.Embedding``
  weight's states in 32 bits, through bitsandbytes' ``GlobalOptimManager`` (its check is on the
  class's module name, so it never fires for fusedopt). :func:`keep_embeddings_32bit` does the same
  with ``fusedopt.override``; call it before training. The ``--optim fusedopt_<rule>`` route below
  calls it for you when states are 8-bit.
- **From TrainingArguments, no optimizer code**: use this module's :class:`TrainingArguments` (the
  same fields; it also accepts ``optim="fusedopt_<rule>"`` for every name of
  ``fusedopt.list_optimizers()``) and set ``optim`` / ``optim_args`` as usual:

  ```python
  from fusedopt.integrations.hf import TrainingArguments
  args = TrainingArguments("out", optim="fusedopt_adamw", optim_args="state_bits=8", learning_rate=3e-4)
  trainer = transformers.Trainer(model=model, args=args, train_dataset=ds)   # an unchanged Trainer
  # or from the command line: HfArgumentParser(TrainingArguments) with --optim fusedopt_lion
  ```

  ``learning_rate`` becomes ``lr``; ``adam_beta1/2`` and ``adam_epsilon`` become ``betas`` / ``eps``
  for the rules whose defaults are Adam's (betas (0.9, 0.999), eps 1e-8); ``optim_args``
  (``"key=value,..."``, values read as Python literals) go to the class. Trainer's
  ``weight_decay`` is applied per group by Trainer. Adafactor gets ``relative_step=False,
  scale_parameter=False`` as Trainer's own ``adafactor`` does.

  Trainer looks an optimizer name up in ``transformers.trainer_optimizer._OPTIMIZER_HANDLERS``, and
  ``TrainingArguments`` accepts only the names of its ``OptimizerNames`` enum. This module adds a
  handler per fusedopt name to that table (:func:`register`, done by the ``TrainingArguments``
  subclass) and lets the subclass keep a ``fusedopt_`` name: both depend on transformers internals
  (checked with transformers 5.25).
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field

from ..factory import _rule, list_optimizers, override
from ..optim.adafactor import Adafactor

PREFIX = "fusedopt_"
__all__ = ["keep_embeddings_32bit", "optimizer_cls_and_kwargs", "register", "TrainingArguments", "PREFIX"]


def keep_embeddings_32bit(model) -> int:
    """Keep 32-bit optimizer states for the weight of every ``torch.nn.Embedding`` in ``model``
    (Trainer's rule for bitsandbytes 8-bit optimizers), with ``fusedopt.override(state_bits=32)``.
    Call it before the optimizer's first step. Returns the number of elements kept in 32 bits."""
    from torch import nn

    n = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            override(m.weight, state_bits=32)
            n += m.weight.numel()
    return n


def _parse_optim_args(text) -> dict:
    out = {}
    for item in filter(None, (text or "").replace(" ", "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fusedopt: optim_args item {item!r} is not key=value")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return out


def optimizer_cls_and_kwargs(args, name=None, model=None) -> tuple:
    """``(class, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)`` from a TrainingArguments:
    the rule ``name`` (default ``args.optim`` without its ``fusedopt_`` prefix) and the kwargs
    described in the module docstring. With ``model`` and 8-bit states, also
    :func:`keep_embeddings_32bit(model)`."""
    if name is None:
        name = str(getattr(args.optim, "value", args.optim))
        if not name.startswith(PREFIX):
            raise ValueError(f"fusedopt: args.optim={name!r} is not a fusedopt name ({PREFIX}<rule>, rules: "
                             f"{', '.join(list_optimizers())}); pass name=")
        name = name[len(PREFIX):]
    cls = _rule(name).cls
    sig = inspect.signature(cls.__init__).parameters
    kwargs = {"lr": args.learning_rate}
    if "betas" in sig and sig["betas"].default == (0.9, 0.999):
        kwargs["betas"] = (args.adam_beta1, args.adam_beta2)
    if "eps" in sig and sig["eps"].default == 1e-8:
        kwargs["eps"] = args.adam_epsilon
    if cls is Adafactor:
        kwargs.update(relative_step=False, scale_parameter=False)
    kwargs.update(_parse_optim_args(args.optim_args))
    eight = kwargs.get("state_bits") == 8 or (name.lower().endswith("8bit") and kwargs.get("optim_bits", 8) == 8)
    if eight and model is not None:
        keep_embeddings_32bit(model)
    return cls, kwargs


def _handler(ctx):
    return optimizer_cls_and_kwargs(ctx.args, model=ctx.model)


def register() -> list:
    """Add a Trainer optimizer handler for ``fusedopt_<rule>``, every rule. Idempotent. Returns the names."""
    from transformers import trainer_optimizer

    names = [PREFIX + n for n in list_optimizers()]
    for n in names:
        trainer_optimizer._OPTIMIZER_HANDLERS[n] = _handler
    return names


_CLASS = None


def _training_arguments_class():
    global _CLASS
    if _CLASS is None:
        import transformers

        @dataclass
        class TrainingArguments(transformers.TrainingArguments):
            __doc__ = ("transformers.TrainingArguments that also takes ``optim='fusedopt_<rule>'`` "
                       "(see fusedopt.integrations.hf).\n\n" + (transformers.TrainingArguments.__doc__ or ""))
            # a plain str field: HfArgumentParser would restrict --optim to OptimizerNames' values
            optim: str = field(default="adamw_torch", metadata={
                "help": "The optimizer: a name of transformers' OptimizerNames, or fusedopt_<rule> "
                        "(fusedopt.list_optimizers())."})

            def __post_init__(self):
                name = getattr(self.optim, "value", self.optim)
                ours = isinstance(name, str) and name.startswith(PREFIX)
                if ours:
                    _rule(name[len(PREFIX):])  # an unknown rule fails here, with the known names
                    register()
                    self.optim = "adamw_torch"  # passes the parent's OptimizerNames check ...
                super().__post_init__()
                if ours:
                    self.optim = name  # ... and is the fusedopt name again

        TrainingArguments.__module__ = __name__
        _CLASS = TrainingArguments
    return _CLASS


def __getattr__(attr):  # TrainingArguments is built on first use: importing this module needs no transformers
    if attr == "TrainingArguments":
        return _training_arguments_class()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
