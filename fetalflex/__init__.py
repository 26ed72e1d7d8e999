"""FetalFlex: anatomy-guided synthesis of fetal ultrasound standard planes.

Every image this package produces is synthetic. The embedded data set is a phantom
simulator, so everything said about image quality is about that phantom world.
"""

from fetalflex.about import SYNTHETIC_NOTICE, __version__

__all__ = ["SYNTHETIC_NOTICE", "FetalFlex", "Output", "__version__"]


def __getattr__(name: str) -> object:
    """``from fetalflex import FetalFlex`` without importing torch for the CLI's sake."""
    if name in ("FetalFlex", "Output"):
        from fetalflex import api

        return getattr(api, name)
    raise AttributeError(f"module 'fetalflex' has no attribute {name!r}")
