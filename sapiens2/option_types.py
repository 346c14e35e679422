"""argparse types for option values, so that a bad value is a usage error (exit 2) naming the option before
any work starts. Shared by every sub-command (the task commands, the server, ...); imports nothing heavy."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["height_width", "number", "whole"]


def whole(low: int) -> Callable[[str], int]:
    """A whole number of at least `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def number(low: float = -math.inf, high: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high] (in (low, high] with `above`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if above else value < low
        if not math.isfinite(value) or too_low or value > high:
            if math.isinf(high):
                raise argparse.ArgumentTypeError(
                    f"must be {'more than' if above else 'at least'} {low:g}, got {text}")
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value
    return parse


def height_width(text: str) -> tuple[int, int]:
    """`HxW` -> (height, width), both positive."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 1024x768") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w
