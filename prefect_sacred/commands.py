"""Sacred's ``sacred.commands``: the built-in commands, for scripts that import them."""

from prefect_sacred.config.printing import (
    format_config,
    print_config,
    print_dependencies,
    save_config,
)
from prefect_sacred.config.printing import (
    named_configs_printer as print_named_configs,
)

__all__ = ["format_config", "print_config", "print_dependencies", "print_named_configs", "save_config"]
