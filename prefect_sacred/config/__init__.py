"""Sacred's configuration system: config scopes, named configs, captured functions, ingredients."""

from prefect_sacred.config.assemble import Assembled, ConfigError, assemble
from prefect_sacred.config.captured import CapturedFunction, MissingConfigError, create_rnd, get_seed
from prefect_sacred.config.fixing import ConfigSummary
from prefect_sacred.config.ingredient import Ingredient
from prefect_sacred.config.scope import ConfigDict, ConfigScope, load_config_file, save_config_file

__all__ = [
    "Assembled",
    "CapturedFunction",
    "ConfigDict",
    "ConfigError",
    "ConfigScope",
    "ConfigSummary",
    "Ingredient",
    "MissingConfigError",
    "assemble",
    "create_rnd",
    "get_seed",
    "load_config_file",
    "save_config_file",
]
