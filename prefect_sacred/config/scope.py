"""Config scopes (``@ex.config``), config dicts and files (``ex.add_config``), as Sacred has them.

A config scope is a function whose body is run as module-level code: its local variables
become config entries, and a comment on an entry (on its line or the lines just above) becomes
its doc. The body runs with the fixed values (config updates, named configs, earlier scopes)
already in place, so ``message = "Hello {}!".format(recipient)`` follows an updated ``recipient``.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import os
import pickle
import re
import textwrap
import tokenize
import types
from collections.abc import Callable, Mapping
from typing import Any

from prefect_sacred.config.fixing import ConfigSummary, FixedDict, normalize, unfix
from prefect_sacred.settings import SETTINGS

__all__ = ["ConfigDict", "ConfigScope", "load_config_file", "save_config_file"]

#: Comments that are tool directives, never docs, besides ``SETTINGS.CONFIG.IGNORED_COMMENTS``.
_LINTER_COMMENTS = (re.compile(r"^noqa$"),)
SEED_DOC = "the random seed for this experiment"


class ConfigScope:
    """A function whose local variables are config entries.

    Args:
        function: Its parameters name entries it reads from the config assembled so far (or
            from its ingredients' configs); they take no defaults.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        parameters = inspect.signature(function).parameters.values()
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"config scope {function.__name__}: *args and **kwargs are not allowed")
            if parameter.default is not parameter.empty:
                raise TypeError(f"config scope {function.__name__}: parameters take no default values")
        self.args = [parameter.name for parameter in parameters]
        self.function = function
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__
        self._code, self.docs = _compile_body(function)

    def __getstate__(self) -> dict[str, Any]:
        # Code objects do not pickle (served flows are pickled): compiled again when loaded.
        return {key: value for key, value in self.__dict__.items() if key != "_code"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._code, self.docs = _compile_body(self.function)

    def __call__(
        self,
        fixed: Mapping[str, Any] | None = None,
        preset: Mapping[str, Any] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> ConfigSummary:
        """Run the body with ``fixed`` entries fixed; ``preset`` entries are kept where unset.

        ``fallback`` entries can be read by the parameters of the scope but are not part of
        the result.
        """
        preset, fallback = preset or {}, fallback or {}
        local = FixedDict(fixed)
        visible: dict[str, Any] = {}
        for arg in self.args:
            if arg in preset:
                local[arg] = preset[arg]
            elif arg in fallback:
                visible[arg] = fallback[arg]
            else:
                known = ", ".join(sorted({*preset, *fallback})) or "none"
                raise KeyError(
                    f"config scope {self.__name__} reads {arg!r}, which is not set (known: {known})"
                )
        local.fallback = visible
        exec(self._code, dict(self.function.__globals__), local)
        added = local.reveal()
        summary = ConfigSummary(
            added, local.modified, local.typechanges, local.fallback_writes, docs=self.docs
        )
        _fill_in(local, preset)
        for key, value in dict.items(local):
            if isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue  # imports and helpers of the scope's code, not settings
            summary[key] = normalize(unfix(value))
        return summary


class ConfigDict:
    """Fixed config entries (a dict, or a loaded config file) applied like a scope."""

    def __init__(self, entries: Mapping[str, Any], doc: str | None = None) -> None:
        self.entries = normalize(dict(entries))
        self.__doc__ = doc

    def __call__(
        self,
        fixed: Mapping[str, Any] | None = None,
        preset: Mapping[str, Any] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> ConfigSummary:
        local = FixedDict(fixed)
        _fill_in(local, self.entries)
        _fill_in(local, preset or {})
        added = local.reveal()
        summary = ConfigSummary(added, local.modified, local.typechanges)
        summary.update(unfix(local))
        return summary


def _fill_in(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if not dict.__contains__(target, key):
            target[key] = value
        elif isinstance(target[key], dict) and isinstance(value, Mapping):
            _fill_in(target[key], value)


# --- the body of a scope --------------------------------------------------------------------


def _compile_body(function: Callable[..., Any]) -> tuple[types.CodeType, dict[str, str]]:
    try:
        lines, first_line = inspect.getsourcelines(function)
        filename = inspect.getsourcefile(function) or "<config>"
    except (OSError, TypeError):
        raise ValueError(
            f"config scope {function.__name__}: its source code cannot be read (Sacred's config scopes "
            "need it); use ex.add_config({...}) instead"
        ) from None
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    definition = next(node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    lines = source.splitlines()
    # As in Sacred, the body starts right after the header's colon: a comment there is in it.
    header_end = _header_end(source, definition)
    header_line = lines[header_end[0] - 1]
    lines[header_end[0] - 1] = " " * header_end[1] + header_line[header_end[1] :]
    for index in range(definition.lineno - 1, header_end[0] - 1):
        lines[index] = ""
    docs = _docs(definition, lines)  # before the line numbers move to the file's
    module = ast.Module(body=definition.body, type_ignores=[])
    ast.increment_lineno(module, first_line - 1)
    try:
        code = compile(module, filename, "exec")
    except SyntaxError as exc:
        statement = (exc.text or "").strip()
        raise SyntaxError(
            f"config scope {function.__name__}: {exc.msg} ('{statement}' in {filename}, line {exc.lineno}); "
            "a config scope's body is run as plain code: it cannot return or yield"
        ) from None
    return code, docs


def _header_end(source: str, definition: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """Where the function's header ends: just after the colon before its first statement."""
    first = definition.body[0]
    end = (definition.lineno, 0)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.start >= (first.lineno, first.col_offset):
            break
        if token.type == tokenize.OP and token.string == ":":
            end = token.end
    return end


def _docs(definition: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> dict[str, str]:
    """The comment of each assigned name: on its line, else the nearest comment line above."""
    docs = {"seed": SEED_DOC}
    for statement in definition.body:
        for node in (statement, *ast.iter_child_nodes(statement)):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in _names(target):
                        if name.id not in docs and (doc := _doc_for(name.lineno - 1, lines)) is not None:
                            docs[name.id] = doc
    return docs


def _names(target: ast.expr) -> list[ast.Name]:
    if isinstance(target, ast.Name):
        return [target]
    if isinstance(target, ast.Tuple):
        return [name for element in target.elts for name in _names(element)]
    return []


def _ignored(comment: str) -> bool:
    if any(pattern.match(comment) for pattern in _LINTER_COMMENTS):
        return True
    return any(re.match(pattern, comment) for pattern in SETTINGS.CONFIG.IGNORED_COMMENTS)


def _doc_for(index: int, lines: list[str]) -> str | None:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(lines[index]).readline)
        comments = [token.string[1:].strip() for token in tokens if token.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):  # a statement continued on the next lines
        comments = []
    for comment in comments:
        if not _ignored(comment):
            return comment
    for line in reversed(lines[:index]):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = stripped.strip("# ")
            if not _ignored(comment):
                return comment
        elif stripped:
            return None
    return None


# --- config files ---------------------------------------------------------------------------


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ValueError("YAML config files need PyYAML: pip install pyyaml") from None
    return yaml


def load_config_file(filename: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config from a ``.json``, ``.yaml``/``.yml`` or ``.pickle`` file.

    Raises:
        ValueError: another extension, or a file that does not hold a dict.
    """
    path = os.fspath(filename)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json":
        from prefect_sacred.serialization import restore

        with open(path, encoding="utf-8") as handle:
            loaded = restore(json.load(handle))
    elif extension in (".yaml", ".yml"):
        yaml = _yaml()
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    elif extension == ".pickle":
        with open(path, "rb") as handle:
            loaded = pickle.load(handle)
    else:
        raise ValueError(
            f'config file "{path}": unsupported extension {extension!r} (use .json, .yaml or .pickle)'
        )
    if not isinstance(loaded, dict):
        raise ValueError(f'config file "{path}" does not hold a dict of config entries')
    return loaded


def save_config_file(config: Mapping[str, Any], filename: str | os.PathLike[str]) -> None:
    """Write ``config`` to a ``.json``, ``.yaml``/``.yml`` or ``.pickle`` file."""
    path = os.fspath(filename)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json":
        from prefect_sacred.serialization import flatten

        with open(path, "w", encoding="utf-8") as handle:
            json.dump(flatten(dict(config)), handle, sort_keys=True, indent=2)
    elif extension in (".yaml", ".yml"):
        with open(path, "w", encoding="utf-8") as handle:
            _yaml().safe_dump(dict(config), handle)
    elif extension == ".pickle":
        with open(path, "wb") as handle:
            pickle.dump(dict(config), handle)
    else:
        raise ValueError(
            f'config file "{path}": unsupported extension {extension!r} (use .json, .yaml or .pickle)'
        )
