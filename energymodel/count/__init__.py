"""Counting: from a model to action counts (operations and memory accesses per operand), unpriced.

- :mod:`.trace` - one forward pass at batch 1 records every leaf-module call and functional op;
  :mod:`.attention_call` - ``F.scaled_dot_product_attention`` recorded as one call with its backend;
- :mod:`.work` - :class:`OpVec`/:class:`Work`, what one call costs per training phase;
- :mod:`.gemm` - conv/linear/matmul rules and their loop nest (:class:`GemmShape`);
- :mod:`.activations`, :mod:`.attention`, :mod:`.lookup` - element-wise rules, attention (every backend),
  embeddings and upsampling;
- :mod:`.ops` - every other rule, and the two registries (module classes, aten ops);
- :mod:`.custom_rules` - :func:`register_rule` for users' own modules and operators;
- :mod:`.phases` - the training phases (forward, backward to inputs and weights, update), optimizers and the
  memory accesses of a batch, with the size that decides their level;
- :mod:`.memory_trace`, :mod:`.footprint` - the memory a training step holds (weights, gradients, optimizer
  state, saved activations) and its peak.

May import :mod:`energymodel.models` and the ground floor; never memory, price or anything above.
"""
