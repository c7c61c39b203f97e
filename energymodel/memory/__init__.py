"""Memory: which level (register file, SRAM, DRAM) serves every access, under a stated dataflow.

- :mod:`.loopnest` - the loop nest inside the PE array: SRAM re-reads and register-file refills of a conv/linear
  phase (the array and its register files are table data);
- :mod:`.tiling` - the SRAM tiling of conv/linear phases: the tiles that fit the buffer together with the fewest
  DRAM words;
- :mod:`.levels` - the rules (weights, saved activations, RF accesses per operation) and one phase's words;
- :mod:`.residency` - one residency plan for the whole network: which activations stay on chip, per phase;
- :mod:`.words` - every layer's words per level, the pieces above together.

May import :mod:`energymodel.count`, :mod:`energymodel.models` and the ground floor.
"""
