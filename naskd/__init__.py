"""naskd: neural architecture search under knowledge distillation for small, fast NLP students."""
__version__ = "0.1.0"
