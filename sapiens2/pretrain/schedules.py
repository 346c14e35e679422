"""Per-iteration schedules of pretraining: learning rate, teacher momentum, teacher temperature."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, warmup: int, final: float) -> float:
    """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to `final` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return final
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * t))


def teacher_momentum(step: int, total: int, start: float = 0.992, end: float = 0.992) -> float:
    """Cosine ramp of the EMA momentum from `start` to `end` over training (constant when equal)."""
    if total <= 0 or start == end:
        return start
    t = min(1.0, step / total)
    return end - 0.5 * (end - start) * (1.0 + math.cos(math.pi * t))


def teacher_temperature(step: int, start: float = 0.065, end: float = 0.07, warmup: int = 1000) -> float:
    """Linear warm-up of the teacher temperature from `start` to `end` over `warmup` steps, then `end`."""
    if step >= warmup or warmup <= 0:
        return end
    return start + (end - start) * step / warmup
