from .aggregators import AGGREGATORS, build_aggregator, register_aggregator
from .ops import OPS, build_op, is_parameter_free, register_op, register_op_family
from .spec import SearchSpace, load_space

__all__ = ["OPS", "AGGREGATORS", "is_parameter_free", "build_op", "build_aggregator", "register_op",
           "register_op_family", "register_aggregator", "SearchSpace", "load_space"]
