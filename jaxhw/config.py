"""Experiment configs as dataclasses, turned into command lines with a help line per flag.

A config field is declared with :func:`flag` (default + help text); :func:`parse` builds an
``argparse`` parser from the dataclass (``batch_size`` -> ``--batch-size``), applies a named
``--preset`` and then the flags given explicitly, so every hyperparameter can be overridden.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping, Sequence, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A flag value that cannot work; the message says which and why."""


def flag(default: Any, help: str, choices: Sequence[Any] | None = None,
         aliases: Sequence[str] = ()) -> Any:
    """A config field with its command-line help (and, optionally, its allowed values and
    older spellings of the flag that still work, e.g. ``["--learning-rate"]``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "aliases": tuple(aliases)})


def _arg_type(hint: Any):
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def build_parser(cls: type, description: str, presets: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
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
        names = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kind = _arg_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:
            help_text += f" (default: {f.default})"
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                help=help_text)
        else:
            choices = f.metadata.get("choices")  # argparse then shows {a,b,c} itself
            parser.add_argument(*names, dest=f.name, type=kind, help=help_text,
                                choices=choices, metavar=None if choices else f.name.upper())
    return parser


def parse(cls: type[C], description: str, argv: Sequence[str] | None = None,
          presets: Mapping[str, Mapping[str, Any]] | None = None) -> C:
    """Parse ``argv`` into a ``cls`` instance: defaults, then the preset, then explicit flags."""
    args = vars(build_parser(cls, description, presets).parse_args(argv))
    preset = args.pop("preset", None)
    values = dict(presets[preset]) if preset else {}
    values.update(args)
    return cls(**values)
