from .model import MixedOp, SearchCell, Supernet

__all__ = ["MixedOp", "SearchCell", "Supernet"]
