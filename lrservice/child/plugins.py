"""One door for task parts: a built-in name or a user's ``"package.module:callable"``.

Modeled on gymnasium's ``register(id, entry_point="module:Class")``: the built-in tables in
:mod:`lrservice.child.names` hold entry points, and a plugin is an entry point given directly.
:func:`check_spec` is syntax only (no import; configs stay torch-free and exports trained on a
plugin task load anywhere); :func:`resolve` imports, searching ``task.plugin_dirs`` (the config
file's directory and the working directory, filled in at load) before ``sys.path``. Every
failure is a :class:`~lrservice.config.ConfigError` line naming the field.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Sequence

from lrservice.errors import ConfigError

_RESOLVED: dict[tuple[str, tuple[str, ...]], Callable] = {}


def is_plugin(spec: str) -> bool:
    """Whether ``spec`` names an entry point rather than a built-in."""
    return ":" in spec


def check_spec(field: str, spec: str, builtins: Mapping[str, str], what: str) -> None:
    """``spec`` is a built-in name or well-formed ``package.module:attribute`` (no import)."""
    if spec in builtins:
        return
    if not is_plugin(spec):
        raise ConfigError(f"{field}: {spec!r} is not allowed; choose one of: {', '.join(builtins)}, "
                          f"or give your own {what} as 'package.module:callable'")
    module, _, attr = spec.partition(":")
    if not _dotted(module) or not _dotted(attr):
        raise ConfigError(f"{field}: {spec!r} is not allowed; a plugin is 'package.module:callable' "
                          "(dotted Python names on both sides of one colon)")


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def resolve(field: str, spec: str, builtins: Mapping[str, str], plugin_dirs: Sequence[str] = (),
            what: str = "callable") -> Callable:
    """The callable ``spec`` names, imported once per process."""
    key = (spec, tuple(plugin_dirs))
    if key in _RESOLVED:
        return _RESOLVED[key]
    check_spec(field, spec, builtins, what)
    entry = builtins.get(spec, spec)
    module_name, _, attr = entry.partition(":")
    for directory in reversed(tuple(plugin_dirs)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the plugin's module itself, not one it imports
            where = ", ".join(plugin_dirs) + " and sys.path" if plugin_dirs else "sys.path"
            raise ConfigError(f"{field}: module {module_name!r} of {spec!r} was not found (searched {where}); "
                              "install it, or put it next to the config file or in the working directory") from None
        raise ConfigError(f"{field}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised on import
        raise ConfigError(f"{field}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{field}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{field}: {spec!r} is a {type(target).__name__}, not a callable")
    _RESOLVED[key] = target
    return target
