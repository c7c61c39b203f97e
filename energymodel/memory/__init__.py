"""Memory: which level (register file, SRAM, DRAM) serves every access, under a stated dataflow.

- :mod:`.tiling` - the tiled dataflow of conv/linear layers: the loop tiling whose tiles fit the buffer
  together with the fewest DRAM words;
- :mod:`.levels` - the level rule for everything else (a tensor is on chip when it fits), register-file
  accesses per operation, and the tiled layers' words per level.

May import :mod:`energymodel.count`, :mod:`energymodel.models` and the ground floor.
"""
