"""The Prefect flow of an experiment, and its parameters: the top-level entries of its config.

The deployment form in the Prefect UI shows each with its type, its default and its doc (the
comment on the entry in the config scope, or the main function's ``Args:`` text). Entries of
config scopes take any value, as in Sacred (a changed type is a warning, not an error); the
main function's own annotated parameters are validated by Prefect.
"""

from __future__ import annotations

import inspect
import keyword
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import WithJsonSchema

from prefect_sacred.flows.options import UsageError

if TYPE_CHECKING:
    from prefect import Flow

    from prefect_sacred.flows.lifecycle import RunLifecycle

__all__ = ["NAMED_CONFIGS_PARAMETER", "build_flow", "flow_signature", "lenient", "with_docs"]

logger = logging.getLogger("prefect_sacred")

#: The flow parameter choosing named configs in a deployment run (a list of their names).
NAMED_CONFIGS_PARAMETER = "named_configs"


def _json_type(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}


def lenient(schema: dict[str, Any]) -> Any:
    """An annotation that shows ``schema`` in the UI and accepts any value."""
    return Annotated[Any, WithJsonSchema(schema)]


def flow_signature(
    config: Mapping[str, Any],
    annotations: Mapping[str, Any],
    named_configs: list[str],
) -> inspect.Signature:
    """Keyword-only parameters: each top-level config entry, ``seed``, and the named configs."""
    parameters = []
    for key, value in config.items():
        if key == "seed" or key.startswith("_") or not key.isidentifier() or keyword.iskeyword(key):
            # Set with config updates, not as parameters: Prefect's parameter model refuses
            # names with a leading underscore (Sacred's __doc__, private entries).
            continue
        annotation = annotations.get(key, lenient(_json_type(value)))
        parameters.append(
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=annotation)
        )
    # None draws a seed: the form must accept its default (a bare integer type refuses it).
    seed_annotation = annotations.get("seed", lenient({"anyOf": [{"type": "integer"}, {"type": "null"}]}))
    parameters.append(
        inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=seed_annotation)
    )
    if named_configs and NAMED_CONFIGS_PARAMETER not in config:
        schema = {"type": "array", "items": {"type": "string", "enum": named_configs}}
        parameters.append(
            inspect.Parameter(
                NAMED_CONFIGS_PARAMETER,
                inspect.Parameter.KEYWORD_ONLY,
                default=[],
                annotation=lenient(schema),
            )
        )
    return inspect.Signature(parameters)


def with_docs(docstring: str | None, docs: Mapping[str, str], signature: inspect.Signature) -> str | None:
    """``docstring`` with an ``Args:`` section for documented entries it does not describe yet.

    Prefect reads parameter descriptions from the flow function's Google-style docstring.
    """
    documented = docstring or ""
    lines = []
    for name in signature.parameters:
        doc = docs.get(name)
        if name == NAMED_CONFIGS_PARAMETER:
            doc = "named configs to apply, in order (Sacred's 'with NAME')"
        if doc and f"{name}:" not in documented:
            lines.append(f"    {name}: {' '.join(doc.split())}")
    if not lines:
        return docstring
    text = inspect.cleandoc(documented)
    if "\nArgs:\n" in f"\n{text}":  # one section: Prefect reads the first
        head, _, tail = f"\n{text}".partition("\nArgs:\n")
        return f"{head.lstrip()}\nArgs:\n" + "\n".join(lines) + "\n" + tail + "\n"
    return f"{text}\n\nArgs:\n" + "\n".join(lines) + "\n"


def build_flow(
    function: Callable[..., Any],
    execute: Callable[[], Any],
    *,
    name: str,
    signature: inspect.Signature,
    docs: Mapping[str, str],
    hooks: RunLifecycle,
    flow_options: dict[str, Any],
    existing: Flow[Any, Any] | None = None,
    config_doc: str | None = None,
) -> Flow[Any, Any]:
    """The Prefect flow of an experiment: parameters ``signature``, body ``execute``, our hooks.

    Its description is the main function's docstring, else the config scope's (``config_doc``).

    ``existing`` is refreshed in place (a config added after the main function), so the object
    users hold stays the flow.
    """

    def body(**kwargs: Any) -> Any:
        return execute()

    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__annotations__ = {
        parameter.name: parameter.annotation for parameter in signature.parameters.values()
    }
    for attribute in ("__name__", "__qualname__", "__module__"):
        setattr(body, attribute, getattr(function, attribute))
    body.__doc__ = with_docs(function.__doc__, docs, signature)
    if existing is not None:
        from prefect.utilities.callables import parameter_schema

        existing.fn = body
        existing.parameters = parameter_schema(body)
        return existing
    from prefect import Flow

    options: dict[str, Any] = {
        "name": name,
        "description": inspect.getdoc(function) or (inspect.cleandoc(config_doc) if config_doc else None),
        "on_running": [hooks.on_running],
        "on_completion": [hooks.on_completion],
        "on_failure": [hooks.on_failure],
        "on_crashed": [hooks.on_crashed],
        "on_cancellation": [hooks.on_cancellation],
        **flow_options,
    }
    try:
        return Flow(body, **options)
    except ValueError:
        if "validate_parameters" in flow_options:
            raise
    # Prefect cannot build its validator for some defaults (a numpy array compares
    # ambiguously); such an experiment still runs, with its parameters unvalidated.
    logger.warning(
        "experiment %r: Prefect cannot validate these config parameters; running unvalidated", name
    )
    return Flow(body, **{**options, "validate_parameters": False})


def main_parameters(
    function: Callable[..., Any], special: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The defaults and the annotations of the main function's config parameters.

    Raises:
        TypeError: ``*args``/``**kwargs``, or an unknown special argument (``_name``).
    """
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = {}
    defaults: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{function.__name__}: *args and **kwargs cannot be config parameters")
        if parameter.name in special:
            continue
        if parameter.name.startswith("_"):
            raise TypeError(f"{function.__name__}: unknown special argument {parameter.name!r}")
        if parameter.default is not parameter.empty:
            defaults[parameter.name] = parameter.default
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is not parameter.empty:
            annotations[parameter.name] = annotation
    return defaults, annotations


def check_main_values(
    config: dict[str, Any],
    arguments: Sequence[str],
    special: Sequence[str],
    defaults: Mapping[str, Any],
    annotations: Mapping[str, Any],
) -> None:
    """Prefect's validation of the main function's typed parameters, in ``config`` (converted there).

    Raises:
        UsageError: an argument without a value, or a value its annotation refuses.
    """

    missing = [
        name for name in arguments if name not in special and name not in config and name not in defaults
    ]
    if missing:
        raise UsageError(f"missing value for config parameter(s): {', '.join(missing)}")
    typed = {key: config[key] for key in annotations if key in config}
    if not typed:
        return
    from pydantic import TypeAdapter, ValidationError

    for key, value in typed.items():
        try:
            config[key] = TypeAdapter(annotations[key]).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0].get("msg", "invalid value")
            raise UsageError(f"config parameter {key!r}: {reason} (got {value!r})") from None
        except Exception:  # an annotation pydantic cannot check is left to the function
            continue
