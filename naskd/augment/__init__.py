"""Data augmentation for distillation (Tang et al. 2019): masking, POS-guided word replacement and
n-gram sampling, labelled once by the teacher through the output cache."""
from .generate import AugmentSettings, augment_example, augment_texts
from .pos import CorpusTagger, PosTagger, SpacyTagger, default_tagger

__all__ = ["AugmentSettings", "augment_example", "augment_texts", "CorpusTagger", "PosTagger", "SpacyTagger",
           "default_tagger"]
