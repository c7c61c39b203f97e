"""energymodel: an analytical hardware cost model (MACs, memory accesses, storage, energy) for PyTorch modules.

Never imports ``incremental``.
"""

from .blocks import BlockNet, as_block_net, split_at
from .errors import TableError, UserError

__all__ = ["BlockNet", "as_block_net", "split_at", "UserError", "TableError"]
__version__ = "0.1.0"
