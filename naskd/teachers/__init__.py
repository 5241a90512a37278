from .model import TeacherModel, load_teacher, resolve_base_model, save_teacher

__all__ = ["TeacherModel", "load_teacher", "save_teacher", "resolve_base_model"]
