"""The config file: its schema, loading with located errors, the built-in default, rule tables.

Callers import from here; the modules behind it are `schema` (the pydantic models), `load`
(finding, reading and validating the file, the built-in default), `rules` (the `[[rules]]`
tables) and `toml_lines` (which line each key is on).
"""

from pirouter_py.config.load import default_ledger_path, load_config, parse_bind, parse_config
from pirouter_py.config.schema import (
    BUILTIN_SOURCE,
    QUALITY_RANK,
    CascadeConfig,
    Config,
    LoadedConfig,
    ModelConfig,
    ProviderConfig,
    ServerConfig,
)

__all__ = [
    "BUILTIN_SOURCE",
    "QUALITY_RANK",
    "CascadeConfig",
    "Config",
    "LoadedConfig",
    "ModelConfig",
    "ProviderConfig",
    "ServerConfig",
    "default_ledger_path",
    "load_config",
    "parse_bind",
    "parse_config",
]
