from .architect import Architect

__all__ = ["Architect"]
