"""The energy and the energy cost of running: the one formula, written once.

    kWh = (accelerator W + CPU W per vCPU x vCPUs) / 1000 x hours x PUE
    CNY = kWh x price, where price is the DC's flat ``price_cny_kwh``, or, when the DC has a
          time-of-use :class:`~westflow.tariffs.Tariff` and the run's start is known, the
          tariff's mean price over the hours the run takes.

Used by placement (the filter and the explanation, one DC or numpy columns of every DC),
the admission metering (priced over the hours a job ran) and the simulator. Pure Python
(and numpy arrays, element by element the same operations in the same order).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from westflow.tariffs import Tariff

__all__ = ["energy_kwh", "price_over", "energy_cost_cny"]

F = TypeVar("F", float, NDArray[np.float64])


def energy_kwh(accelerator_watts: F | float, cpu_watts: F | float, cpus: float, hours: float, pue: F | float) -> F:
    """kWh of running ``hours`` at this power, PUE included (floats, or numpy arrays of every DC)."""
    return (accelerator_watts + cpu_watts * cpus) / 1000 * hours * pue  # type: ignore[return-value]


def price_over(price_cny_kwh: float, tariff: Tariff | None, start_s: float | None, hours: float) -> float:
    """CNY/kWh of a run: the tariff's mean over ``[start_s, start_s + hours)`` when both are known, else the
    flat price."""
    if tariff is None or start_s is None:
        return price_cny_kwh
    return tariff.mean_price(start_s, hours)


def energy_cost_cny(kwh: F, price_cny_kwh: F | float, tariff: Tariff | None = None, start_s: float | None = None,
                    hours: float = 0.0) -> F:
    """CNY of ``kwh`` used over ``hours`` from ``start_s`` (see :func:`price_over`); with no tariff or no
    start, ``kwh x price_cny_kwh`` (which may be numpy columns)."""
    if tariff is None or start_s is None:
        return kwh * price_cny_kwh
    return kwh * tariff.mean_price(start_s, hours)
