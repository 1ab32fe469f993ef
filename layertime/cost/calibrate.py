"""A device profile from a calibration (``layertime calibrate``), optionally with
efficiencies fitted to a measured run.

:mod:`layertime.measure.calibrate` measures the peaks (a
:class:`~layertime.results.cost.calibration.Calibration`); :func:`to_profile` turns
them into a :class:`~layertime.cost.devices.DeviceProfile`, with efficiencies
fitted to a measured run (:func:`fit_to_run`, :mod:`layertime.cost.fit`)
when given; :mod:`layertime.cost.profile_file` saves it as TOML.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from layertime.cost.devices import DeviceProfile
from layertime.cost.fit import DEFAULT_MIN_SHARE, fit_efficiency
from layertime.cost.roofline import MathMode
from layertime.errors import LayertimeError
from layertime.results.cost.calibration import Calibration, EfficiencyFit
from layertime.results.run import Run


def _source(cal: Calibration) -> str:
    mib = cal.memory_bytes / 2**20
    sides = ", ".join(f"{p} {n}" for p, n in cal.matmul_sizes.items())
    return (
        f"measured by layertime calibrate on {cal.host} ({cal.device}, {cal.threads} threads, "
        f"torch {cal.torch}) {cal.created}: best of up to {cal.repeats} square matmuls (side "
        f"{sides}); copy {cal.copy_gb_per_s:.3g} GB/s and add {cal.add_gb_per_s:.3g} GB/s "
        f"over {mib:g} MiB buffers"
        + (f"; shape grid of {cal.grid.points} points ({cal.grid.noise.summary})"
           if cal.grid is not None else "")
    )


def to_profile(cal: Calibration, name: str, fit: EfficiencyFit | None = None) -> DeviceProfile:
    """The device profile of a calibration, with fitted efficiencies when given."""
    profile = DeviceProfile(
        key=name,
        name=cal.device_name,
        peak_tflops=dict(cal.matmul_tflops),
        memory_bandwidth_gb_per_s=cal.memory_bandwidth_gb_per_s,
        source=_source(cal),
        memory_gb=cal.memory_gb,
        grid=cal.grid,
        # The grid's rates are net of the per-op fixed cost; a prediction adds it per kernel.
        kernel_latency_s=cal.grid.fixed_s if cal.grid is not None else 0.0,
    )
    if fit is None:
        return profile
    return replace(
        profile,
        compute_efficiency=fit.fitted("compute"),
        memory_efficiency=fit.fitted("memory"),
        efficiency_source=fit.source,
    )


def fit_to_run(
    cal: Calibration,
    name: str,
    run: Run,
    *,
    model: str | None = None,
    min_share: float = DEFAULT_MIN_SHARE,
) -> tuple[DeviceProfile, EfficiencyFit, list[str]]:
    """Count the run's configuration, fit efficiencies to it on the measured peaks.

    Returns the profile with the fitted efficiencies, the fit, and warnings
    (a run measured on another host).  ``model`` is the name to count
    (default: the run's own).
    """
    from layertime.cost import estimate

    if torch.device(run.device).type != torch.device(cal.device).type:
        raise LayertimeError(
            f"the run was measured on {run.device} and the calibration on {cal.device}: "
            "fit a run of the device calibrated (--device)"
        )
    warnings = []
    if run.environment.host != cal.host:
        warnings.append(f"the run was measured on host {run.environment.host}, the peaks on "
                        f"{cal.host}")
    if run.environment.threads != cal.threads:
        warnings.append(f"the run used {run.environment.threads} threads, the calibration "
                        f"{cal.threads}")
    cost = estimate(
        model or run.model,
        batch_size=run.batch_size,
        input_shape=run.input_shape,
        num_classes=run.num_classes or 1000,
        optimizer=run.optimizer,
        dtype=run.dtype,
    )
    fit = fit_efficiency(
        run, cost, to_profile(cal, name), min_share=min_share, mode=MathMode.of_run(run.environment)
    )
    return to_profile(cal, name, fit), fit, warnings
