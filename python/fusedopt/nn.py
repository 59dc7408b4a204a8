"""Modules that go with 8-bit optimizers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .q8 import register_32bit_state

__all__ = ["StableEmbedding"]


class StableEmbedding(nn.Embedding):
    """nn.Embedding for training with 8-bit optimizer states (Dettmers et al. 2022, docs/algorithms.md
    §19.4): Xavier-uniform initialisation (padding row zeroed), a LayerNorm (learnable, over
    embedding_dim) after the lookup, computed in the default float dtype and cast back to the
    weight's dtype; and the weight is registered for 32-bit optimizer states
    (fusedopt.register_32bit_state), so an 8-bit fusedopt optimizer keeps its states in float32.

    Same arguments as nn.Embedding."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(embedding_dim, device=device)
        register_32bit_state(self.weight)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        self._fill_padding_idx_with_zero()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        emb = F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                          self.scale_grad_by_freq, self.sparse)
        emb = emb.to(torch.get_default_dtype())
        return self.norm(emb).to(self.weight.dtype)
