"""Distillation criteria: a registry of named criteria, pure functions underneath."""
from . import functional
from .criteria import Criterion, DistillationLoss, KDContext, default_pairs
from .registry import CRITERIA, parse_kd, parse_pairs, register_criterion

__all__ = ["functional", "Criterion", "DistillationLoss", "KDContext", "CRITERIA", "parse_kd", "parse_pairs",
           "register_criterion", "default_pairs"]
