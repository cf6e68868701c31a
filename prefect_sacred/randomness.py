"""Sacred's ``sacred.randomness``: seeds and generators, for scripts that import them."""

from prefect_sacred.config.captured import SEED_RANGE as SEEDRANGE
from prefect_sacred.config.captured import create_rnd, get_seed, set_global_seed

__all__ = ["SEEDRANGE", "create_rnd", "get_seed", "set_global_seed"]
