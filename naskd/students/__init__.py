from .fixed import FixedCell, FixedStudent

__all__ = ["FixedCell", "FixedStudent"]
