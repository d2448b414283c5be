"""Options as data: each one a flag, an optional environment variable, a default, help and validation.

Every command declares its options in a table of :class:`Option`; :func:`add_options` turns a table
into argparse flags (defaults left unset, so nothing is read while the parser is built) and
:func:`resolve` gives their values: the flag, else the environment variable, else the default, each
parsed and checked, or a :class:`~ecg_anomaly.base.errors.ConfigError` that names the flag or the
variable. The environment is read only there, when a command runs. The same tables generate the
documentation's option reference.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ecg_anomaly.base.errors import ConfigError


@dataclass(frozen=True)
class Option:
    name: str  # the value's name; the flag is --name-with-dashes
    env: str | None  # environment variable, or None for a flag only
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], bool] | None = None  # False: invalid
    check_text: str = ""  # what a valid value is, for the error message
    default_text: str | None = None  # how a computed default reads ("ecg-worker-<hostname>")
    kind: str = "value"  # "value"; "switch" (a flag without a value: True when given); "list" (repeatable)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def shown_default(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.default_text is not None:
            return self.default_text
        if self.kind == "switch":
            return "off"
        if self.default is None or self.default == "":
            return "(none)"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """One flag per option; nothing is parsed or validated here (see :func:`resolve`)."""
    for option in options:
        extra = [f"default {option.shown_default()}"]
        if option.env:
            extra.insert(0, f"env {option.env}")
        if option.choices:
            extra.insert(0, "one of " + ", ".join(option.choices))
        help_text = f"{option.help} [{'; '.join(extra)}]"
        if option.kind == "switch":
            parser.add_argument(
                option.flag, dest=option.name, action="store_true", default=None, help=help_text
            )
        elif option.kind == "list":
            parser.add_argument(
                option.flag, dest=option.name, action="append", metavar=option.metavar, help=help_text
            )
        else:
            parser.add_argument(
                option.flag, dest=option.name, default=None, metavar=option.metavar, help=help_text
            )


def resolve(
    options: Iterable[Option], args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Each option's value: the flag, else its environment variable, else its default; checked."""
    values: dict[str, Any] = {}
    for option in options:
        raw = getattr(args, option.name, None)
        source = option.flag
        if raw is None and option.env and environ.get(option.env, "") != "":
            raw, source = environ[option.env], option.env
        if raw is None:
            values[option.name] = option.default
        elif option.kind == "switch":
            values[option.name] = raw if isinstance(raw, bool) else convert(option, raw, source)
        elif option.kind == "list":
            items = raw if isinstance(raw, list) else [v for v in raw.split(",") if v]
            values[option.name] = tuple(convert(option, item, source) for item in items)
        else:
            values[option.name] = convert(option, raw, source)
    return values


def convert(option: Option, raw: str, source: str) -> Any:
    if option.choices and raw not in option.choices:
        raise ConfigError(f"{source}: {raw!r} is not one of: {', '.join(option.choices)}")
    try:
        value = option.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {raw!r} is not valid ({exc})") from exc
    if option.check is not None and not option.check(value):
        raise ConfigError(f"{source}: {raw!r} is not valid (expected {option.check_text})")
    return value


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and the way to more help), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


# --- parsers and checks shared by the option tables --------------------------------------------------


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def positive(value: float) -> bool:
    return value > 0


def non_negative(value: float) -> bool:
    return value >= 0


def names(options: Sequence[Option]) -> list[str]:
    return [o.name for o in options]
