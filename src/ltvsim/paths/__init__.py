"""Price paths: the validated container and the generators that fill it."""
from ._price_paths import PricePaths
from .gbm import gbm

__all__ = ["PricePaths", "gbm"]
