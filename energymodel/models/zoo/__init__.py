"""The model zoo: ResNets, VGG-16 and a small CNN, each a :class:`~energymodel.models.blocks.BlockNet`.

Use :func:`build` (``build("cifar_resnet20", num_classes=100)``) or the factories directly.
"""

from energymodel.models.zoo.registry import ZOO, ZooEntry, build, get_entry, zoo_names
from energymodel.models.zoo.resnet import Add, BasicBlock, Bottleneck

__all__ = ["ZOO", "ZooEntry", "build", "get_entry", "zoo_names", "Add", "BasicBlock", "Bottleneck"]
