"""Glue for the trainers people already use. Each module imports its framework lazily, and only when
one of its functions is called: ``import fusedopt`` never needs them.

- ``fusedopt.integrations.hf``: Hugging Face Trainer (``--optim fusedopt_<rule>``, the 32-bit
  embedding rule for 8-bit states).
- ``fusedopt.integrations.lightning``: a ``configure_optimizers`` helper for LightningModules.
- ``fusedopt.integrations.timm``: registers every rule with timm's optimizer registry.
"""
