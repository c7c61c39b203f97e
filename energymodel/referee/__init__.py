"""Referees: independent tools that count the same models, so a reader can check our numbers.

- :mod:`.fvcore` - fvcore's ``FlopCountAnalysis`` beside our forward MACs, module by module, each
  difference explained;
- :mod:`.zigzag` - ZigZag (optional extra ``.[zigzag]``, imported only inside its functions) beside every memory
  level of our conv/linear phases: the hardware and workloads described, every placement tried, the verdict;
- :mod:`.zigzag_mapping` - our own mapping of a phase written as ZigZag loops, for ZigZag to count when its search
  and our words disagree;
- :mod:`.memory` - the peak of a real training step measured with PyTorch's memory profiler.

A referee decides for itself; we only compare. May import :mod:`energymodel.analysis` and every floor below.
"""
