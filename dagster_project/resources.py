"""The project's one resource: llambert's settings, validated once per run, with the task and the warehouse.

:class:`LlambertResource` is what the UI's launchpad edits. Its ``setup_for_execution`` builds a
:class:`~llambert.context.Run` (settings + task + connection factory) once per run (per step process);
every asset and check reads that object. ``python -m dagster_project.run`` and ``ingest_now`` hand
Definitions the ``Run`` they validated themselves (:meth:`LlambertResource.of`): nothing is re-read midway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import yaml
from pydantic import Field, PrivateAttr

from llambert.config import Settings, load_settings
from llambert.context import Run
from llambert.tasks import Task


class LlambertResource(dg.ConfigurableResource):
    """Settings from llambert.yaml (or ``config_path``), with optional YAML overrides.

    Every asset reads the :class:`Run` built from them once per run, so the UI, the CLI and tests share one
    validated configuration.
    """

    config_path: str | None = Field(
        None, description="A llambert YAML file; default: LLAMBERT_CONFIG or ./llambert.yaml."
    )
    overrides_yaml: str = Field("", description="YAML merged over the file, e.g. 'sample: {size: 200}'.")
    # Launchpad fields for the settings people change per run. Empty = the configured value; a
    # value is validated with the rest of the settings (a wrong one fails the run, naming it).
    sample_size: int | None = Field(
        None,
        description="How many documents the LLM labels (sample.size; default 1000). Growing the sample keeps "
        "the documents already chosen, and cached answers are not paid for again.",
    )
    teacher_model: str | None = Field(
        None,
        description="The labeling LLM (teacher.model): a registry name such as qwen2.5-coder-0.5b-instruct "
        "(`llambert models` lists them), a local directory, or a hub id.",
    )
    teacher_mode: str | None = Field(
        None,
        description="teacher.mode: 'choice' (default except for the openai backend: score each label's words, a "
        "probability per label for the students' soft labels, never off-format) or 'generate' (free answer, parsed "
        "by the task's parser, as in the paper).",
    )
    student_model: str | None = Field(
        None, description="The encoder to fine-tune (student.model), e.g. all-minilm-l6-v2, a directory or a hub id."
    )
    student_epochs: int | None = Field(None, description="Training epochs for the student (student.epochs; default 3).")
    student_recipe: str | None = Field(
        None,
        description="student.recipe: 'llambert' (LLM labels), 'baseline' (gold train labels), "
        "'llambert_extra' or 'combined' (LLM labels, then gold).",
    )
    student_self_distill: int | None = Field(
        None,
        description="student.self_distill: pool documents the first students label for a second, distilled "
        'encoder (default 2000; 0: off, saving a second training at some accuracy: README "Students").',
    )
    student_distill_from: str | None = Field(
        None,
        description="student.distill_from: 'encoder' (default: the distilled encoder continues the first one for "
        "student.distill_epochs epochs) or 'base' (it trains fresh: about 2.6x the cost, at most a few tenths better).",
    )
    # The run built from these fields once per run (setup_for_execution), or handed in by the caller (of).
    _run: Run | None = PrivateAttr(None)

    def launchpad_overrides(self) -> dict:
        """The launchpad fields that were set, as a nested settings dict."""
        fields = {
            "sample_size": ("sample", "size"),
            "teacher_model": ("teacher", "model"),
            "teacher_mode": ("teacher", "mode"),
            "student_model": ("student", "model"),
            "student_epochs": ("student", "epochs"),
            "student_recipe": ("student", "recipe"),
            "student_self_distill": ("student", "self_distill"),
            "student_distill_from": ("student", "distill_from"),
        }
        out: dict = {}
        for attr, (section, key) in fields.items():
            value = getattr(self, attr)
            if value is not None and value != "":
                out.setdefault(section, {})[key] = value
        return out

    @classmethod
    def of(cls, run: Run) -> dg.ResourceDefinition:
        """The resource for a run validated by the caller (the CLI): used as it is, never rebuilt."""
        resource = cls()
        resource._run = run
        return dg.ResourceDefinition.hardcoded_resource(resource, "llambert settings validated by the caller")

    def load_run(self) -> Run:
        """Validate the settings this configuration names (file, environment, overrides) and read the task."""
        overrides = yaml.safe_load(self.overrides_yaml) if self.overrides_yaml.strip() else {}
        for section, values in self.launchpad_overrides().items():
            overrides[section] = {**(overrides.get(section) or {}), **values}
        return Run.of(load_settings(self.config_path, overrides or None))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self._run is None:
            self._run = self.load_run()

    @property
    def run(self) -> Run:
        """The run's settings, task and warehouse (built on first use outside a Dagster run)."""
        if self._run is None:
            self._run = self.load_run()
        return self._run

    def settings(self) -> Settings:
        return self.run.settings

    @property
    def task(self) -> Task:
        return self.run.task

    @contextlib.contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator:
        """A connection to the warehouse with every schema and durable table in place."""
        with self.run.warehouse(read_only=read_only) as con:
            yield con

    def sessions(self):
        """Short write sessions for the long steps (no connection held while a model works)."""
        return self.run.sessions()


def settings_of(llambert: LlambertResource | Run) -> Settings:
    """The settings of what Definitions are built with."""
    return llambert.settings if isinstance(llambert, Run) else llambert.settings()
