"""Experiment configs as dataclasses, turned into command lines with a help line per flag.

A config field is declared with :func:`flag`: its default, its help text and its valid
values (a range ``ge``/``gt``/``le``/``lt`` for numbers, ``choices`` for names, ``items``
for comma-separated lists). :func:`parse` builds an ``argparse`` parser from the dataclass
(``batch_size`` -> ``--batch-size``), applies a named ``--preset`` and then the flags given
explicitly, so every hyperparameter can be overridden.

Every config checks itself when it is built (:class:`Checked`): each field against its
domain, then the rules between fields (a config's ``rules`` method). So the command line
and the Python API refuse the same values with the same message: argparse's one line and
exit code 2 on the command line, a :class:`ConfigError` from ``Config(...)`` in Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A flag value that cannot work; the message says which and why."""


def _number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class Domain:
    """The valid values of a numeric flag: an interval (each end closed, open or absent),
    only finite values for floats, and ``words`` accepted besides numbers (e.g.
    ``default``). A list of such values is an :class:`Items`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    integer: bool = False
    words: tuple[str, ...] = ()

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low = (f"[{_number(self.ge)}" if self.ge is not None else
               f"({_number(self.gt)}" if self.gt is not None else None)
        high = (f"{_number(self.le)}]" if self.le is not None else
                f"{_number(self.lt)})" if self.lt is not None else None)
        if low and high:
            text = f"{kind} in {low}, {high}"
        elif low:
            text = f"{kind} {'>=' if self.ge is not None else '>'} {low[1:]}"
        elif high:
            text = f"{kind} {'<=' if self.le is not None else '<'} {high[:-1]}"
        else:
            text = kind
        return text + "".join(f" or {w}" for w in self.words)

    def admits(self, value: Any) -> bool:
        if isinstance(value, str) and value in self.words:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        return not ((self.ge is not None and value < self.ge)
                    or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le)
                    or (self.lt is not None and value >= self.lt))


@dataclasses.dataclass(frozen=True)
class Items:
    """A comma-separated list flag (a string such as ``"64,128,256"``): each entry an
    integer in ``domain`` (or one of its words) or, with ``names``, one of them."""

    domain: Domain | None = None
    names: tuple[str, ...] = ()
    allow_empty: bool = False

    def describe(self) -> str:
        what = (f"one of {', '.join(self.names)}" if self.names else self.domain.describe())
        text = f"comma-separated entries, each {what}"
        return text + (" (empty for all)" if self.allow_empty else "")

    def parse(self, text: str) -> list:
        """The entries of ``text``; ValueError when one is not valid."""
        entries = [e.strip() for e in text.split(",")] if text.strip() else []
        if not entries and not self.allow_empty:
            raise ValueError
        if self.names:
            if any(e not in self.names for e in entries):
                raise ValueError
            return entries
        values = []
        for e in entries:
            value = e if e in self.domain.words else int(e)
            if not self.domain.admits(value):
                raise ValueError
            values.append(value)
        return values

    def admits(self, value: Any) -> bool:
        try:
            self.parse(value)
        except (ValueError, AttributeError):
            return False
        return True


def flag(default: Any, help: str, choices: Sequence[Any] | None = None,
         aliases: Sequence[str] = (), *, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None, words: Sequence[str] = (),
         items: Items | None = None, const: Any = None, nargs: str | None = None) -> Any:
    """A config field with its command-line help and its valid values: ``choices`` (names),
    a range for numbers (``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <; floats must also be
    finite; ``words`` accepted besides numbers), or ``items`` for a comma-separated list.
    ``aliases`` are older spellings that still work, e.g. ``["--learning-rate"]``; with
    ``const`` the flag's value may be left out (``--resume`` alone means ``const``);
    ``nargs="+"`` takes one or more values (a ``list[str]`` field)."""
    bounds = dict(ge=ge, gt=gt, le=le, lt=lt)
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "aliases": tuple(aliases), "items": items,
        "const": const, "nargs": nargs,
        "bounds": bounds if any(v is not None for v in bounds.values()) else None,
        "words": tuple(words)})


def _arg_type(hint: Any):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def domain_of(cls: type, field: dataclasses.Field) -> Domain | Items | None:
    """The declared valid values of a numeric or list field (None for names, paths and
    switches)."""
    if field.metadata.get("items") is not None:
        return field.metadata["items"]
    kind = _arg_type(typing.get_type_hints(cls)[field.name])
    if kind not in (int, float):
        return None
    bounds = field.metadata.get("bounds") or {}
    return Domain(**bounds, integer=kind is int, words=field.metadata.get("words", ()))


def describe(cls: type, field: dataclasses.Field) -> str | None:
    """The valid values of ``field`` in words, or None when any value of its type works."""
    domain = domain_of(cls, field)
    if domain is not None:
        return domain.describe()
    if field.metadata.get("choices"):
        return "one of " + ", ".join(map(str, field.metadata["choices"]))
    return None


def check_field(cls: type, field: dataclasses.Field, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` lies outside ``field``'s valid values."""
    if value is None and field.default is None:
        return  # an optional value left unset
    domain = domain_of(cls, field)
    choices = field.metadata.get("choices")
    bad = (domain is not None and not domain.admits(value)) or (
        domain is None and choices is not None and value not in choices)
    if bad:
        raise ConfigError(f"{flag_name(field)} must be {describe(cls, field)}, got {value!r}")


class Checked:
    """Mixin for config dataclasses: building one checks every field against its domain,
    then :meth:`rules`. A config whose fields are changed after it was built can be
    checked again with :meth:`check`."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        for f in dataclasses.fields(self):
            check_field(type(self), f, getattr(self, f.name))
        self.rules()

    def rules(self) -> None:
        """Rules between flags (width divisible by heads, ...): raise ConfigError. Each
        config adds its own and calls ``super().rules()``; nothing may load data here."""


class Parser(argparse.ArgumentParser):
    """argparse with errors as one line (no usage block): ``prog: error: what (see
    --help)``, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _converter(cls: type, field: dataclasses.Field, kind: type):
    """argparse ``type=`` for a numeric field: a value that is not a number of the right
    kind is refused with the field's valid values (the range is checked when the config
    is built, so that the Python API gives the same message)."""
    words = field.metadata.get("words", ())

    def convert(text: str):
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {describe(cls, field)}, got {text!r}"
                                             ) from None
    convert.__name__ = kind.__name__
    return convert


def build_parser(cls: type, description: str, presets: Mapping[str, Mapping[str, Any]] | None = None,
                 prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(description=description, prog=prog,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    argument_default=argparse.SUPPRESS)
    if presets:
        lines = [f"{name}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults")
                 for name, values in presets.items()]
        parser.add_argument("--preset", choices=list(presets), default=None,
                            help="named configuration; explicit flags override it. "
                                 + "; ".join(lines))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names = [flag_name(f), *f.metadata.get("aliases", ())]
        kind = _arg_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        domain = describe(cls, f) if not f.metadata.get("choices") else None
        shown = [domain] if domain else []
        if "(default" not in help_text:
            shown.append(f"default: {f.default}")
        if shown:
            help_text += f" ({'; '.join(shown)})"
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                help=help_text)
        else:
            choices = f.metadata.get("choices")  # argparse then shows {a,b,c} itself
            convert = _converter(cls, f, kind) if kind in (int, float) else kind
            optional = ({"nargs": "?", "const": f.metadata["const"]}
                        if f.metadata.get("const") else {})
            if f.metadata.get("nargs"):
                optional, convert = {"nargs": f.metadata["nargs"]}, str
            parser.add_argument(*names, dest=f.name, type=convert, help=help_text,
                                choices=choices, metavar=None if choices else f.name.upper(),
                                **optional)
    return parser


def _prog(cls: type) -> str | None:
    """``python -m <module of cls>``, the command the user typed (argparse's default,
    the file name, says less)."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else None
    return f"python -m {module}" if module else None


def retired_error(argv: Sequence[str], retired: Mapping[str, str],
                  presets: Mapping[str, Any] | None = None,
                  earlier_presets: str | None = None) -> str | None:
    """The message for the first flag of ``retired`` (flag -> where it went) in ``argv``,
    or with ``earlier_presets`` (where presets went), for a ``--preset`` name not in
    ``presets``; else None."""
    for k, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name in retired:
            return f"{name} was removed: {retired[name]}"
        if name == "--preset" and earlier_presets and presets is not None:
            value = value or (argv[k + 1] if k + 1 < len(argv) else "")
            if value and value not in presets:
                return f"--preset {value} is not one of {', '.join(presets)}; {earlier_presets}"
    return None


def parse(cls: type[C], description: str, argv: Sequence[str] | None = None,
          presets: Mapping[str, Mapping[str, Any]] | None = None,
          retired: Mapping[str, str] | None = None, earlier_presets: str | None = None) -> C:
    """Parse ``argv`` into a ``cls`` instance: defaults, then the preset, then explicit
    flags. A value outside its flag's domain, or against a rule between flags, ends the
    program as argparse does (one line on stderr, exit code 2); so do a ``retired`` flag
    (``{"--flag": where it went}``) and, with ``earlier_presets`` (where they went), a
    ``--preset`` name that is not one of ``presets``."""
    parser = build_parser(cls, description, presets, prog=_prog(cls))
    argv = sys.argv[1:] if argv is None else list(argv)
    gone = retired_error(argv, retired or {}, presets, earlier_presets)
    if gone:
        parser.error(gone)
    args = vars(parser.parse_args(argv))
    preset = args.pop("preset", None) if presets else None  # else a field may be "preset"
    values = dict(presets[preset]) if preset else {}
    values.update(args)
    try:
        return cls(**values)
    except ConfigError as e:
        parser.error(str(e))
