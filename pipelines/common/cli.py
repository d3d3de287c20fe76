"""The one command line of every entry point: `script.py [--config FILE] [--flag VALUE ...] [key=value ...]`.

The config is the dataclass's defaults, then the YAML file, then the `key=value` overrides, then the flags a
script offers as shortcuts (`--prompt-class 12` is `prompt_class=12`); every value is checked by the schema.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Optional, Sequence, TypeVar

from .config import load_config
from .errors import ConfigError

T = TypeVar("T")


def parse_cli(config_cls: type[T], argv: Optional[Sequence[str]] = None, description: str = "",
              default_config: Optional[Path] = None, flags: Mapping[str, str] = {}) -> T:
    """Parse `argv` into a `config_cls`. `flags` maps config keys to help texts: each becomes `--key-name VALUE`.

    Raises ConfigError for a value the schema or the config's own checks refuse."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=default_config,
                        help=f"YAML config (default: {default_config or 'the built-in defaults'})")
    for key, help_text in flags.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="VALUE", help=help_text)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key, e.g. seed=3")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + [f"{key}={getattr(args, key)}" for key in flags
                                        if getattr(args, key) is not None]
    try:
        return load_config(config_cls, args.config, overrides)
    except ConfigError:
        raise
    except ValueError as err:  # a section's own check, e.g. vae.losses.LossConfig
        raise ConfigError(str(err)) from None
