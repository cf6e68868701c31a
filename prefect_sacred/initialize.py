"""Sacred's ``sacred.initialize`` is its internal run set-up; here it names what to use instead.

Any name taken from it raises one line: the config of a run is ``ex.assemble(config_updates,
named_configs)``, a run is ``ex.run(...)`` (or ``ex.run_commandline()``).
"""

from typing import Any

from prefect_sacred._lazy import NotInPrefectSacred

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotInPrefectSacred(
        f"sacred.initialize.{name} is Sacred's internal run set-up, which prefect-sacred does not have: "
        "use ex.assemble(config_updates, named_configs) for a run's config and ex.run(...) to run it"
    )
