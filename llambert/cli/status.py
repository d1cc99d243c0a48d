"""`llambert status`: batches (partitions), counts, pending work, the champion, the inbox.

Reads the warehouse read-only and the inbox folder; needs no Dagster. Batches whose last run
stopped before their rows were ingested and labeled (killed, failed, or still going) are listed
as unfinished, with how to finish them (``llambert ingest --now``).
"""

from __future__ import annotations

import argparse
import json

import duckdb

from llambert.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="batches, counts, pending work, the champion and the inbox",
        description="What the warehouse holds per batch (partition), what is left to label, which "
        "student is the champion, audits and retrain requests, and files waiting in the inbox.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    from llambert.cli.sql import add_wait_argument

    add_wait_argument(p)
    p.set_defaults(func=_status)


BATCH_SQL = """
WITH batches AS (
    SELECT batch FROM raw.occurrences UNION SELECT batch FROM raw.corpus UNION SELECT batch FROM raw.rejected
    UNION SELECT batch FROM raw.inbox_files
), labeled AS (
    SELECT c.batch, count(*) AS n FROM raw.corpus c
    JOIN predictions.labels p ON p.doc_id = c.doc_id AND p.checkpoint_id = $champion
    GROUP BY 1
)
SELECT b.batch,
       f.file_name AS file,
       (SELECT count(*) FROM raw.occurrences o WHERE o.batch = b.batch) AS accepted_rows,
       (SELECT count(*) FROM raw.rejected r WHERE r.batch = b.batch) AS rejected_rows,
       (SELECT count(*) FROM raw.corpus c WHERE c.batch = b.batch) AS documents,
       f.known_documents,
       coalesce(l.n, 0) AS labeled,
       (SELECT count(*) FROM raw.corpus c WHERE c.batch = b.batch) - coalesce(l.n, 0) AS pending,
       a.audited, a.agreement, a.retrain_requested,
       coalesce(f.ingested_at, (SELECT min(ingested_at) FROM raw.corpus c WHERE c.batch = b.batch)) AS ingested_at
FROM batches b
LEFT JOIN labeled l USING (batch)
LEFT JOIN raw.inbox_files f USING (batch)
LEFT JOIN labeling.audit_runs a USING (batch)
ORDER BY b.batch <> 'initial', ingested_at NULLS LAST, b.batch
"""


def status_report(settings: Settings, wait_s: float = 60.0, on_wait=None) -> dict:
    """Everything `llambert status` shows, as plain data (waits up to ``wait_s`` for a writer's lock)."""
    from llambert.audit import open_retrain_requests
    from llambert.inbox import known_batches, pending_files, unfinished_batches
    from llambert.warehouse import connect, table_exists

    report: dict = {
        "warehouse": str(settings.warehouse_path),
        "inbox": str(settings.inbox_dir),
        "waiting_in_inbox": [p.name for p in pending_files(settings)],
    }
    if not settings.warehouse_path.exists():
        report["error"] = "no warehouse yet: run `make run` (or `llambert run`) first"
        return report
    con = connect(settings.warehouse_path, read_only=True, wait_s=wait_s, on_wait=on_wait)
    try:
        champion = None
        if table_exists(con, "students.champion"):
            row = con.execute(
                "SELECT ch.checkpoint_id, ch.base_model, ch.metric, ch.score, c.created_at FROM students.champion ch "
                "JOIN students.checkpoints c USING (checkpoint_id)"
            ).fetchone()
            if row:
                champion = {
                    "checkpoint_id": row[0],
                    "base_model": row[1],
                    "metric": row[2],
                    "score": row[3],
                    "trained_at": str(row[4]),
                }
        report["champion"] = champion
        if not table_exists(con, "raw.inbox_files"):
            report["error"] = "the warehouse predates incremental batches: run `llambert run` once to add the tables"
            return report
        batches = con.execute(BATCH_SQL, {"champion": champion["checkpoint_id"] if champion else ""}).pl()
        report["batches"] = batches.with_columns(batches["ingested_at"].cast(str)).to_dicts()
        report["pending_documents"] = int(batches["pending"].sum()) if batches.height else 0
        ingested = set(batches["batch"].to_list())
        claimed = {b.partition: b for b in known_batches(settings).values()}
        report["claimed_not_ingested"] = sorted(p for p in claimed if p not in ingested)
        report["unfinished_batches"] = [
            {"batch": p, "file": claimed[p].file_name, "reason": why}
            for p, why in unfinished_batches(con, settings, claimed).items()
        ]
        report["open_retrain_requests"] = [
            {k: (str(v) if k == "requested_at" else v) for k, v in r.items()}
            for r in open_retrain_requests(con).to_dicts()
        ]
    except duckdb.Error as e:
        report["error"] = f"cannot read the warehouse: {e}"
    finally:
        con.close()
    return report


def format_report(r: dict) -> list[str]:
    lines = [f"warehouse: {r['warehouse']}"]
    ch = r.get("champion")
    if ch:
        lines.append(
            f"champion:  {ch['checkpoint_id']} ({ch['base_model']}, {ch['metric']} {ch['score']:.4f}, "
            f"trained {ch['trained_at'][:19]})"
        )
    elif "champion" in r:
        lines.append("champion:  none yet (train a student: `llambert run`)")
    if r.get("error"):
        lines.append(f"!! {r['error']}")
    batches = r.get("batches") or []
    if batches:
        lines.append("")
        lines.append(
            f"{'batch (partition)':40} {'accepted':>8} {'rejected':>8} {'new docs':>8} {'known':>8} "
            f"{'labeled':>8} {'pending':>8}  audit"
        )
        for b in batches:
            audit = (
                f"{b['audited']} audited, agreement {b['agreement']:.3f}"
                if b["agreement"] is not None
                else ("-" if b["audited"] is None else f"{b['audited']} audited, none parsed")
            )
            if b["retrain_requested"]:
                audit += ", retrain requested"
            known = "-" if b["known_documents"] is None else b["known_documents"]
            lines.append(
                f"{b['batch'][:40]:40} {b['accepted_rows']:>8} {b['rejected_rows']:>8} {b['documents']:>8} {known:>8} "
                f"{b['labeled']:>8} {b['pending']:>8}  {audit}"
            )
        lines.append("")
        lines.append(
            f"pending work: {r['pending_documents']} document(s) without a prediction from the champion"
            + (" (run label_corpus for their batches, e.g. a backfill)" if r["pending_documents"] else "")
        )
    for req in r.get("open_retrain_requests") or []:
        lines.append(f"retrain requested by batch {req['batch']}: {req['reason']}")
    unfinished = r.get("unfinished_batches") or []
    if unfinished:
        lines.append(
            f"unfinished batches: {len(unfinished)} (the last run stopped before the end: killed, failed, "
            f"or still going)"
        )
        for u in unfinished:
            lines.append(f"  {u['batch']} ({u['file']}): {u['reason']}")
        lines.append(
            "  finish them with `llambert ingest --now` (it re-runs each batch whose run is not going; "
            "what was committed is kept or replaced, never doubled)"
        )
    waiting = r.get("waiting_in_inbox") or []
    lines.append(
        f"inbox ({r['inbox']}): {len(waiting)} file(s) waiting" + (": " + ", ".join(waiting) if waiting else "")
    )
    return lines


def _status(args: argparse.Namespace) -> int:
    from llambert.cli.sql import waiting_message
    from llambert.config import load_settings

    report = status_report(load_settings(args.config), wait_s=args.wait, on_wait=waiting_message("status"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(format_report(report)))
    return 1 if report.get("error") else 0
