"""The package's public surface and what importing it costs.

Like httpx's test_exported_members: every public package lists exactly its public names in
``__all__``. Importing the package, its blocks (Prefect's ``prefect.collections`` entry point,
loaded by every Prefect process) or an observer module must not load the flow engine, a database
driver, numpy or pandas: the names are imported on first use.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

from tests.support import subprocess_env

PUBLIC_PACKAGES = [
    "prefect_sacred",
    "prefect_sacred.config",
    "prefect_sacred.flows",
    "prefect_sacred.observers",
    "prefect_sacred.observers.mongo",
    "prefect_sacred.observers.sql",
    "prefect_sacred.observers.tinydb",
    "prefect_sacred.observers.notify",
    "prefect_sacred.observers.object_store",
    "prefect_sacred.observers.prefect_ui",
    "prefect_sacred.blocks",
    "prefect_sacred.tasks",
    "prefect_sacred.testing",
]
HEAVY = [
    "numpy",
    "pandas",
    "pymongo",
    "sqlalchemy",
    "tinydb",
    "boto3",
    "google.cloud.storage",
    "requests",
    "telegram",
    "prefect.flow_engine",
    "prefect.flows",
]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    for exported in module.__all__:
        assert getattr(module, exported) is not None, exported  # lazy names resolve
    public = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType) and member != "annotations"
    }
    assert public == set(module.__all__) - {"__version__"}


def _loaded_after(statement: str) -> list[str]:
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=subprocess_env()
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import prefect_sacred",
        "import prefect_sacred.blocks",
        "import prefect_sacred.observers.base",
        "import prefect_sacred.observers.file_storage",
        "import prefect_sacred.observers.mongo",
        "import prefect_sacred.observers.sql",
        "import prefect_sacred.observers.tinydb",
        "import prefect_sacred.observers.notify",
        "import prefect_sacred.observers.object_store",
        "from prefect_sacred.observers.registry import observer_options; observer_options()",
        "import prefect_sacred.testing",
        "from prefect_sacred.serialization import flatten; flatten({'a': {1, 2}, 'b': (3, 4)})",
    ],
)
def test_imports_stay_light(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert [module for module in HEAVY if module in loaded] == []


def test_numpy_values_are_still_encoded_once_numpy_is_imported() -> None:
    np = pytest.importorskip("numpy")
    from prefect_sacred.serialization import flatten, restore

    restored = restore(flatten({"weights": np.arange(3)}))
    assert restored["weights"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_dir_lists_the_public_names_before_they_are_imported(name: str) -> None:
    # What IPython and Jupyter complete after "prefect_sacred.testing.": the lazy names too.
    script = f"import json, {name} as m\nprint(json.dumps(dir(m)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=subprocess_env()
    )
    listed = set(json.loads(done.stdout.strip().splitlines()[-1]))
    module = importlib.import_module(name)
    assert set(module.__all__) - {"__version__"} <= listed


def _import_cycles(graph: object, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                target = edges[node][child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in edges[node]:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_package_has_no_import_cycle() -> None:
    # grimp sees every import statement: in functions and under TYPE_CHECKING too. A package's
    # __init__ re-exporting its own modules is no cycle, so package modules are left out.
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("prefect_sacred", cache_dir=None)
    packages = {m for m in graph.modules if importlib.util.find_spec(m).submodule_search_locations}  # type: ignore[union-attr]
    modules = {m for m in graph.modules if m.startswith("prefect_sacred") and m not in packages}
    assert _import_cycles(graph, modules) == []
