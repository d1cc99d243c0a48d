"""Quality gates on the LLM labels: they guard the spending that follows (training, inference)."""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import dict_table
from llambert.tasks import load_task

PARSED = dg.AssetKey(["labeling", "parsed_labels"])


@dg.asset_check(asset=PARSED, blocking=True, description="The rarest label's share of the parsed labels is at least checks.min_minority_share.")
def label_balance(llambert: LlambertResource) -> dg.AssetCheckResult:
    settings = llambert.settings()
    with llambert.warehouse() as con:
        counts = pipeline.label_balance(con, load_task(settings.task))
    total = sum(counts.values())
    minority = min(counts, key=counts.get)
    share = counts[minority] / total if total else 0.0
    bound = settings.checks.min_minority_share
    return dg.AssetCheckResult(
        passed=total > 0 and share >= bound,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"minority label '{minority}' has {share:.1%} of {total} labels (bound {bound:.0%})",
        metadata={"minority_share": share, "bound": bound, "minority_label": minority,
                  "counts": dg.MetadataValue.md(dict_table(counts, "label", "rows"))},
    )


@dg.asset_check(asset=PARSED, blocking=True, description="The share of LLM answers discarded is at most checks.max_discard_rate.")
def discard_rate(llambert: LlambertResource) -> dg.AssetCheckResult:
    settings = llambert.settings()
    with llambert.warehouse() as con:
        parsed, discarded = con.execute(
            "SELECT (SELECT count(*) FROM labeling.parsed_labels), (SELECT count(*) FROM labeling.discarded)"
        ).fetchone()
        reasons = dict(con.execute("SELECT reason, count(*) FROM labeling.discarded GROUP BY 1").fetchall())
    total = parsed + discarded
    rate = discarded / total if total else 1.0
    bound = settings.checks.max_discard_rate
    return dg.AssetCheckResult(
        passed=total > 0 and rate <= bound,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{discarded} of {total} answers discarded ({rate:.1%}, bound {bound:.0%})",
        metadata={"discard_rate": rate, "bound": bound, "discarded": discarded, "answers": total,
                  "reasons": dg.MetadataValue.md(dict_table(reasons or {"(none)": 0}, "reason", "rows"))},
    )
