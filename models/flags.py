"""A method's own command-line settings: declared once, offered by the verbs, checked in one place."""

import math
import typing

from models.errors import ModelConfigError


class Flag(typing.NamedTuple):
    """One setting a method reads from the config's `extra`, offered as `--name-with-dashes`.

    Attributes:
        name: key in `extra` (and in config.json's "extra").
        type: `float`, `int` or `str`.
        help: the flag's help line, defaults included.
        choices: allowed values of a `str` flag.
        minimum: smallest allowed number (None: any).
        positive: numbers must be > minimum rather than >= minimum.
        default: the value when the flag is not given (None: the method's own default applies).
    """

    name: str
    type: type
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    positive: bool = False
    default: object = None

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """Raise ModelConfigError (one line) when `value` is not allowed."""
        if value is None:
            return
        if self.choices is not None:
            if value not in self.choices:
                raise ModelConfigError(f"unknown {self.option} {value!r}; use one of {', '.join(self.choices)}")
            return
        if self.type in (int, float):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ModelConfigError(f"{self.option} must be a number, got {value!r}") from None
            too_small = self.minimum is not None and (number <= self.minimum if self.positive else number < self.minimum)
            if not math.isfinite(number) or too_small:
                if self.minimum == 0:
                    words = "a positive number" if self.positive else "a non-negative number"
                elif self.minimum is None:
                    words = "a finite number"
                else:
                    words = f"{'more than' if self.positive else 'at least'} {self.minimum:g}"
                raise ModelConfigError(f"{self.option} must be {words}, got {value}")
