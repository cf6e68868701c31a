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
