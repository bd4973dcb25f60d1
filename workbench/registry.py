"""Plugin registries: trainers (`workbench.trainers`), benchmarks (`workbench.benchmarks`) and verifiers
(`workbench.verifiers`).

Built-ins are registered through the same entry points as third-party plugins (pyproject.toml).
A plugin that fails to import is reported by name and does not break the others.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

TRAINERS = "workbench.trainers"
BENCHMARKS = "workbench.benchmarks"
VERIFIERS = "workbench.verifiers"


class PluginError(ValueError):
    pass


@cache
def _load(group: str) -> tuple[dict, dict]:
    """Return ({name: object}, {name: error message}) for every entry point in `group`."""
    loaded, broken = {}, {}
    for ep in entry_points(group=group):
        if ep.name in loaded:
            continue  # the first distribution wins; editable installs can list one twice
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            broken[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}".splitlines()[0]
    return loaded, broken


def plugins(group: str) -> dict:
    return dict(_load(group)[0])


def broken_plugins(group: str) -> dict[str, str]:
    return dict(_load(group)[1])


def get_plugin(group: str, name: str):
    loaded, broken = _load(group)
    if name in loaded:
        return loaded[name]
    if name in broken:
        raise PluginError(f"plugin '{name}' ({group}) failed to load: {broken[name]}")
    known = ", ".join(sorted(loaded)) or "none"
    raise PluginError(f"unknown {group.split('.')[-1][:-1]} '{name}' (registered: {known})")


def get_trainer(name: str):
    return get_plugin(TRAINERS, name)


def get_benchmark(name: str):
    return get_plugin(BENCHMARKS, name)


def get_verifier(name: str):
    return get_plugin(VERIFIERS, name)


def reload() -> None:
    """Forget cached entry points (tests that install a plugin at run time call this)."""
    _load.cache_clear()
