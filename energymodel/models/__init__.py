"""Models: the networks the cost model prices and the shape that makes them shareable.

- :mod:`.blocks` - :class:`BlockNet` (an ordered chain of named blocks, then a head) and its helpers;
- :mod:`.cuts` - where a model can be cut (one pass records which tensors are alive between module calls);
  :mod:`.chain` - :func:`block_view`: any model seen as a BlockNet at its sharing points (found or declared);
  :mod:`.split` - ``torch.fx`` segments when a ``forward`` runs code between its blocks;
- :mod:`.zoo` - ResNets, VGG-16 and a small CNN, each a BlockNet; :mod:`.layers` - ``Add`` and friends;
- :mod:`.spec` - a MODEL argument (zoo name, ``package.module:factory``, ``file.py:factory``) resolved;
- :mod:`.inputs` - example inputs and shapes with their bounds; :mod:`.meta` - running a model on PyTorch's
  ``meta`` device and putting it back exactly.

The lowest floor: imports nothing from ``energymodel`` but the ground floor (``errors``, ``progress``).
"""
