"""The code location: llambert's assets, checks, jobs and resources."""

import dagster as dg

import assets.audit
import assets.checks
import assets.evaluation
import assets.inbox
import assets.inference
import assets.ingest
import assets.labeling
import assets.training
from dagster_project.jobs import JOBS
from dagster_project.resources import LlambertResource
from dagster_project.sensors import build_sensors

ASSET_MODULES = [assets.ingest, assets.labeling, assets.training, assets.inference, assets.evaluation,
                 assets.inbox, assets.audit]


def build_definitions(llambert: LlambertResource | None = None) -> dg.Definitions:
    """Definitions with the given settings resource (tests pass their own)."""
    llambert = llambert or LlambertResource()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules([assets.checks]),
        jobs=JOBS,
        sensors=build_sensors(llambert),
        resources={"llambert": llambert},
    )


defs = build_definitions()
