"""timm: every fusedopt rule in timm's optimizer registry, so ``timm.optim.create_optimizer_v2(model,
"fusedoptadamw")`` builds ``fusedopt.AdamW`` with timm's param groups (no weight decay for 1-D params
and the model's ``no_weight_decay()`` names).

```python
import fusedopt.integrations.timm as fo_timm
fo_timm.register()                       # once; returns the names: "fusedopt" + each rule name
opt = timm.optim.create_optimizer_v2(model, "fusedoptlamb", lr=1e-3, weight_decay=0.05)
opt = timm.optim.create_optimizer_v2(model, "lookahead_fusedoptadamw", lr=1e-3)  # timm's Lookahead
```

Names have no underscore: timm splits a name on ``_`` and reads the first part as a wrapper
(``lookahead_``). The rules and their flags come from ``fusedopt.factory.RULES``. timm has no public
accessor for its default registry; ``register()`` uses ``timm.optim._optim_factory.default_registry``
(the one ``create_optimizer_v2`` reads) unless a registry is given.
"""
from __future__ import annotations

from ..factory import RULES

PREFIX = "fusedopt"


def register(registry=None) -> list:
    """Register ``fusedopt<rule>`` for every rule of fusedopt.factory.RULES with timm's ``registry``
    (default: timm's default registry). Idempotent. Returns the registered names."""
    from timm.optim import OptimInfo

    if registry is None:
        from timm.optim._optim_factory import default_registry as registry
    names = []
    for name, info in RULES.items():
        registry.register(OptimInfo(name=PREFIX + name, opt_class=info.cls, description="fusedopt: " + info.description,
                                    has_eps=info.has_eps, has_momentum=info.has_momentum, has_betas=info.has_betas,
                                    num_betas=info.num_betas, defaults=dict(info.defaults) or None))
        names.append(PREFIX + name)
    return names
