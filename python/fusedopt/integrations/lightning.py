"""PyTorch Lightning: fusedopt optimizers need no adapter. ``configure_optimizers`` may return one;
Lightning's ``optimizer.step(closure=...)`` runs the closure inside ``step()`` as torch.optim does,
and with ``precision="16-mixed"`` Lightning's GradScaler hands ``grad_scale`` / ``found_inf`` to the
kernel (fusedopt optimizers set ``_step_supports_amp_scaling``), so grads are unscaled in the kernel.
``LightningCLI`` selects one by class path: ``--optimizer fusedopt.AdamW --optimizer.lr 1e-3``.

Lightning refuses ``gradient_clip_val`` with ``16-mixed`` for any optimizer that unscales inside
``step()`` (torch's fused Adam too): train in ``bf16-mixed`` (no scaler) to clip with Lightning, or
clip yourself. On the CPU Lightning turns ``precision="16-mixed"`` into ``bf16-mixed``; pass
``plugins=[MixedPrecision("16-mixed", "cpu")]`` to get the scaler there.

This module has one helper, for the usual decay / no-decay groups and a scheduler:

```python
class Model(L.LightningModule):
    def configure_optimizers(self):
        return fusedopt.integrations.lightning.configure_optimizers(
            self, "adamw", lr=3e-4, weight_decay=0.1, state_bits=8,
            scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 100)))
```
"""
from __future__ import annotations

from typing import Callable, Optional

from ..factory import create_optimizer


def configure_optimizers(module, name: str = "adamw", lr: Optional[float] = None, weight_decay: float = 0.0, *,
                         scheduler: Optional[Callable] = None, interval: str = "step", **kwargs):
    """What ``LightningModule.configure_optimizers`` returns: ``fusedopt.create_optimizer(module, name,
    lr, weight_decay, **kwargs)``, and with ``scheduler`` (a callable optimizer -> LRScheduler) the
    dict ``{"optimizer": opt, "lr_scheduler": {"scheduler": ..., "interval": interval}}``."""
    opt = create_optimizer(module, name, lr, weight_decay, **kwargs)
    if scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler(opt), "interval": interval}}
