"""naskd: neural architecture search under knowledge distillation for small, fast NLP students."""
__version__ = "0.1.0"


def load_student(path):
    """Load a retrained student directory: (model, tokenizer, info)."""
    from .students.io import load_student as _load

    return _load(path)
