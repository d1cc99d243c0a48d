"""The teacher's half: the sample, the LLM's raw answers, and their parsing."""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.plots import bar_chart
from llambert.reporting import dict_table, markdown_table


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["labeling", "pool"],
            deps=[dg.AssetKey(["raw", "corpus"])],
            group_name="labeling",
            kinds={"duckdb", "sql"},
            code_version="1",
            description="Every document the teacher may label (a pool split, never an excluded "
            "one), in the seeded order the sample takes them.",
        ),
        dg.AssetSpec(
            ["labeling", "sample"],
            deps=[["labeling", "pool"]],
            group_name="labeling",
            kinds={"duckdb", "sql"},
            code_version="2",
            description="The documents the LLM labels, each with its round and why it was picked. "
            "sample.strategy random: a seeded prefix of the pool (growing it keeps every document already chosen); "
            "uncertainty: the seed round here, later rounds appended by the teacher step.",
        ),
    ],
)
def sample(llambert: LlambertResource):
    with llambert.warehouse() as con:
        stats = pipeline.build_sample(con, llambert.settings())
    yield dg.MaterializeResult(asset_key=["labeling", "pool"], metadata={"dagster/row_count": stats.pool})
    yield dg.MaterializeResult(
        asset_key=["labeling", "sample"],
        metadata={
            "dagster/row_count": stats.rows,
            **stats.metadata(),
            "by_split": dg.MetadataValue.md(dict_table(stats.by_split, "split", "rows")),
        },
    )


# code_version 2: teacher.cascade (answered_by, llm_runs role/threshold/escalated), llama.cpp's grammar.
_TEACHER = {"group_name": "labeling", "kinds": {"duckdb", "pytorch"}, "code_version": "2"}
LLM_RESPONSES = dg.AssetKey(["labeling", "llm_responses"])
# The teacher's bookkeeping: the step that asks the LLM writes these too (llambert/teacher/runner.py), so they
# are specs of this step rather than steps of their own (Dagster: one op may materialize several assets).
TEACHER_TABLES = {
    ("labeling", "llm_cache"): "Every answer ever paid for, keyed by prompt and teacher configuration; a key "
    "already cached keeps its first answer (the audit reuses and extends it).",
    ("labeling", "llm_requests"): "Which cache entry answers which document under a teacher configuration.",
    ("labeling", "cost_projection"): "One row per teacher run: what it cost, and what labeling the whole corpus "
    "would cost with the LLM alone versus with LlamBERT (the report step completes it with the student's docs/s).",
    ("labeling", "llm_runs"): "One row per teacher run: model, backend, mode, prompts requested, cached, asked, "
    "answered, and the run's state; under teacher.cascade its role, the threshold and the share escalated.",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LLM_RESPONSES,
            deps=[dg.AssetKey(["labeling", "sample"])],
            **_TEACHER,
            description="The teacher's raw answer for every sampled document, with the identity of the model that "
            "answered, prompt version, decoding parameters, tokens and latency. Answers are cached: only new prompts "
            "are paid for. Under sample.strategy uncertainty this step asks round by round and appends each round to "
            "labeling.sample. With teacher.cascade a small model answers first and answered_by says whose answer "
            "each document kept ('cascade_small' or 'teacher').",
        ),
        *(
            dg.AssetSpec(list(key), deps=[dg.AssetKey(["labeling", "sample"])], **_TEACHER, description=text)
            for key, text in TEACHER_TABLES.items()
        ),
    ],
)
def llm_responses(context: dg.AssetExecutionContext, llambert: LlambertResource):
    from llambert.progress import also_log_to
    from llambert.teacher.accounting import project_costs, projection_markdown

    settings = llambert.settings()
    # Short write sessions: no connection is open while the teacher works, so `llambert sql` can read.
    with also_log_to(context.log.info):  # progress lines in the run log too
        stats = pipeline.label_sample(llambert.sessions(), settings)
    with llambert.warehouse() as con:
        cost = project_costs(con, settings, llambert.task, stats.run_id)
        counts = {key: con.execute(f"SELECT count(*) FROM {'.'.join(key)}").fetchone()[0] for key in TEACHER_TABLES}
        preview = con.execute(
            "SELECT doc_id, raw_text, prompt_tokens, round(latency_s, 3) AS latency_s FROM labeling.llm_responses LIMIT 8"
        ).pl()
        stripped = pipeline.sample_directives(con) if settings.teacher.strip_directives else None
    context.log.info(f"teacher asked {stats.asked} prompts, {stats.from_cache} came from the cache")
    yield dg.MaterializeResult(
        asset_key=LLM_RESPONSES,
        metadata={
            "dagster/row_count": stats.rows,
            **stats.metadata(),
            "discard_rate": float(cost.get("discard_rate") or 0.0),
            "projection": dg.MetadataValue.md(projection_markdown(cost)),
            "preview": dg.MetadataValue.md(markdown_table(preview)),
            **(
                {
                    "documents_with_directives_stripped": stripped.height,
                    "directives_stripped": dg.MetadataValue.md(markdown_table(stripped.head(20))),
                }
                if stripped is not None
                else {}
            ),
        },
    )
    if stripped is not None and stripped.height:
        context.log.info(f"teacher.strip_directives: {stripped.height} sampled documents lost a directive sentence")
    for key, rows in counts.items():
        yield dg.MaterializeResult(
            asset_key=list(key), metadata={"dagster/row_count": rows, "run_id": str(stats.run_id or "")}
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["labeling", "parsed_labels"],
            deps=[LLM_RESPONSES],
            group_name="labeling",
            kinds={"duckdb", "sql"},
            code_version="2",
            description="Answers that name exactly one of the task's labels: the student's training data, with "
            "the model that answered each (model_identity, answered_by).",
        ),
        dg.AssetSpec(
            ["labeling", "discarded"],
            deps=[LLM_RESPONSES],
            group_name="labeling",
            kinds={"duckdb", "sql"},
            code_version="1",
            description="Answers that name no label or several, with the raw answer and the reason.",
        ),
    ],
)
def parsed_and_discarded(llambert: LlambertResource):
    with llambert.warehouse() as con:
        stats = pipeline.parse_labels(con, llambert.settings())
        balance = pipeline.label_balance(con, llambert.task)
        discarded = con.execute("SELECT doc_id, raw_text, reason FROM labeling.discarded LIMIT 10").pl()
        parsed_preview = con.execute(
            "SELECT p.doc_id, p.label_name, p.raw_text, p.split, left(c.text, 100) AS text "
            "FROM labeling.parsed_labels p JOIN raw.corpus c USING (doc_id) ORDER BY p.sample_rank LIMIT 8"
        ).pl()
    yield dg.MaterializeResult(
        asset_key=["labeling", "parsed_labels"],
        metadata={
            "dagster/row_count": stats.parsed,
            **stats.metadata(),
            "label_balance": dg.MetadataValue.md(dict_table(balance, "label", "rows")),
            "label_balance_chart": dg.MetadataValue.md(bar_chart(balance, "teacher labels in the sample")),
            "preview": dg.MetadataValue.md(markdown_table(parsed_preview)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=["labeling", "discarded"],
        metadata={
            "dagster/row_count": stats.discarded,
            "reasons": dg.MetadataValue.md(dict_table(stats.discard_reasons or {"(none)": 0}, "reason", "rows")),
            "examples": dg.MetadataValue.md(markdown_table(discarded)),
        },
    )
