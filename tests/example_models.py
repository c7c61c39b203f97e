"""``examples/models_people_bring.py`` (torchvision-layout MobileNet, ViT and friends, written without
torchvision) loaded once as the module ``models_people_bring``, for every test that builds those models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATH = Path(__file__).resolve().parents[1] / "examples" / "models_people_bring.py"
NAME = "models_people_bring"


def load() -> ModuleType:
    """The example module, executed on first use and shared afterwards (``sys.modules``)."""
    if NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(NAME, PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[NAME]
