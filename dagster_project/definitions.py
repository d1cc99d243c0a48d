"""The code location: every asset and check under ``assets/``, every job in ``jobs.py``, the sensors, the resource.

Nothing is listed by hand: a new module under ``assets/`` or a new job in ``jobs.py`` is found on the next load.
"""

import warnings

import dagster as dg

import assets
from dagster_project import jobs
from dagster_project.resources import LlambertResource
from dagster_project.sensors import build_sensors
from llambert.context import Run


def build_definitions(llambert: LlambertResource | Run | None = None) -> dg.Definitions:
    """Definitions with the given resource: the launchpad-configurable one (default), or a Run validated already."""
    llambert = llambert if llambert is not None else LlambertResource()
    resource = LlambertResource.of(llambert) if isinstance(llambert, Run) else llambert
    with warnings.catch_warnings():  # loading a module's jobs is a Dagster preview function (dagster is pinned)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        found_jobs = dg.load_definitions_from_module(jobs).jobs
    return dg.Definitions(
        assets=dg.load_assets_from_package_module(assets),
        asset_checks=dg.load_asset_checks_from_package_module(assets),
        jobs=found_jobs,
        sensors=build_sensors(llambert),
        resources={"llambert": resource},
    )


defs = build_definitions()
