"""The bad-input matrix (issue 13): every kind of bad file, through both ways into the warehouse.

Each kind is a small file generated here. It goes through

* the initial corpus: a configured source, read and written by ``pipeline.ingest_batch`` (batch
  ``initial``) into a real DuckDB warehouse with the project's DDL, and
* the inbox: ``claim_file`` (its pre-check is ``check_inbox_file``), then the same batch step for
  the claimed partition and ``register_batch`` (raw.inbox_files), as the ``llambert ingest`` run does.

and on both must end the same way: every input row is in raw.occurrences or raw.rejected, with the
expected reason codes; or the expected file-level error naming the file, with nothing claimed and
nothing written. Texts that are fine but unusual (emoji, RTL, HTML, CRLF, a BOM) must be stored
byte for byte. The real CLI (`llambert ingest A B --now`) is driven in tests/test_ingest_bad_input.py.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llambert.config import load_settings
from llambert.corpus.readers import REJECT_REASONS, ReaderError


@dataclass
class Kind:
    name: str  # file name (its extension picks the reader)
    body: bytes
    rows: int = 0  # input rows
    rejected: dict[str, int] = field(default_factory=dict)  # reason code -> rows
    error: str | None = None  # a file-level error: a regex its message matches
    kept: list[str] | None = None  # the accepted texts, exactly


def _csv(*lines: bytes, header: bytes = b"id,text,label") -> bytes:
    return b"\n".join([header, *lines]) + b"\n"


def _ten(bad: bytes, at: int = 4) -> bytes:
    rows = [b"%d,matrix review %d,1" % (i, i) for i in range(10)]
    rows[at] = bad
    return _csv(*rows)


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _jsonl(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


FINE = [
    "A film 🎬👍🏽 — loved it 😀",
    "סרט מצוין, ממליץ בחום",
    "فيلم رائع جدا",
    '<p>Great <b>acting</b> &amp; "plot"</p>',
    "line one\nline two, with a comma",
]
BIG = "word " * (1024 * 1024)  # 5 MiB, above the default max_text_bytes (1,000,000)

KINDS = [
    Kind("empty.csv", b"", error=r"the file is empty \(0 bytes\)"),
    Kind("header_only.csv", b"id,text,label\n", rows=0, kept=[]),
    Kind("bom.csv", b"\xef\xbb\xbf" + _csv(b"1,with a BOM,1", b"2,second,0"), rows=2, kept=["with a BOM", "second"]),
    Kind("crlf.csv", b'id,text,label\r\n1,first,1\r\n2,"two\r\nlines",0\r\n', rows=2, kept=["first", "two\r\nlines"]),
    Kind("big.parquet", _parquet(text=[BIG, "short"]), rows=2, rejected={"too_long": 1}, kept=["short"]),
    Kind("nul.csv", _csv(b'1,"a\x00b",1', b"2,clean,0"), rows=2, rejected={"nul_byte": 1}, kept=["clean"]),
    Kind(
        "dup_ids.csv",
        _csv(b"7,first version,1", b"8,same,1", b"7,second version,0", b"8,same,1"),
        rows=4,
        rejected={"id_conflict": 2},
        kept=["same", "same"],
    ),
    Kind(
        "labels_outside.csv",
        _csv(b"1,a,1", b"2,b,7", b"3,c,maybe", b"4,d,-1", b"5,e,negative"),
        rows=5,
        rejected={"label_out_of_task": 3},
        kept=["a", "e"],
    ),
    Kind("numeric_text.csv", _csv(b"1,123,1", b"2,4.5,0"), rows=2, kept=["123", "4.5"]),  # CSV has no types: as written
    Kind("numeric_text.parquet", _parquet(text=[111, 222], label=[1, 0]), rows=2, rejected={"text_not_string": 2}),
    Kind("truncated.parquet", _parquet(text=["a", "b"])[:-30], error="cannot be read as parquet"),
    Kind("gzip.csv", gzip.compress(_csv(b"1,a,1")), error="expected csv text but this is a gzip-compressed file"),
    Kind("parquet_named.csv", _parquet(text=["a"]), error="this is a parquet file; rename it .parquet"),
    Kind("utf16.csv", "text\nhello\n".encode("utf-16"), error="UTF-16"),
    Kind(
        "kept.csv",
        b"id,text\n" + b"".join(b'%d,"%s"\n' % (i, t.replace('"', '""').encode()) for i, t in enumerate(FINE)),
        rows=5,
        kept=FINE,
    ),
    Kind("kept.jsonl", _jsonl(*({"id": i, "text": t} for i, t in enumerate(FINE))), rows=5, kept=FINE),
    Kind("latin1.csv", _ten(b"4,caf\xe9 cr\xe8me,1"), rows=10, rejected={"invalid_utf8": 1}),
    Kind("ragged.csv", _ten(b"4,too,many,fields"), rows=10, rejected={"malformed_row": 1}),
    Kind("unbalanced_quote.csv", _ten(b'4,"never closed,1'), rows=10, rejected={"malformed_row": 1}),
    Kind("quote_in_quoted.csv", _ten(b'4,"He said "wow" ok",1'), rows=10, rejected={"malformed_row": 1}),
    Kind(
        "dup_text_header.csv",
        _csv(b"1,a,1,b", header=b"id,text,label,text"),
        error=r"column 'text' appears 2 times in the header \(columns 2 and 4",
    ),
    Kind("no_text_column.csv", _csv(b"1,a,1", header=b"id,review,label"), error="no text column 'text'"),
    Kind(
        "empty_texts.csv",
        _csv(b"1,,1", b'2,"  \t ",0', b"3,\xe2\x80\x8b\xe2\x80\x8d,1", b"4,\xef\xbb\xbf\xc2\xad,0", b"5,real,1"),
        rows=5,
        rejected={"empty_text": 3, "missing_text": 1},
        kept=["real"],
    ),
    Kind(
        "truncated.jsonl",
        _jsonl({"id": 1, "text": "fine"}, {"id": 2, "text": "ok"}) + b'{"id": 3, "text": "cut',
        rows=3,
        rejected={"invalid_json": 1},
        kept=["fine", "ok"],
    ),
    Kind(
        "garbage.jsonl",
        _jsonl(b"garbage first", {"text": "fine"}, b"[1, 2]", b"\xff\xfe", {"text": "ok"}),
        rows=5,
        rejected={"invalid_json": 1, "malformed_row": 1, "invalid_utf8": 1},
        kept=["fine", "ok"],
    ),
    Kind(
        "mixed_types.jsonl",
        _jsonl(
            {"id": 1, "text": 42},
            {"id": "b", "text": ["a"]},
            {"id": 3.5, "text": {"k": 1}},
            {"id": None, "text": "ok", "label": 1},
            {"text": None},
        ),
        rows=5,
        rejected={"text_not_string": 3, "missing_text": 1},
        kept=["ok"],
    ),
    Kind(
        "surrogate.jsonl",
        b'{"text": "\\ud800 x"}\n{"text": "pair \\ud83d\\ude00"}\n',
        rows=2,
        rejected={"invalid_utf8": 1},
        kept=["pair \U0001f600"],
    ),
    Kind(
        "binary_text.parquet",
        _parquet(text=pa.array([b"ok", b"bad \xff"], pa.binary())),
        rows=2,
        rejected={"invalid_utf8": 1},
        kept=["ok"],
    ),
    Kind("list_text.parquet", _parquet(text=[["a", "b"], ["c"]]), rows=2, rejected={"text_not_string": 2}),
    Kind(
        "bool_labels.parquet",
        _parquet(text=["a", "b", "c"], label=[True, False, None]),
        rows=3,
        rejected={"label_out_of_task": 2},
        kept=["c"],
    ),
    Kind(
        "bool_labels.jsonl",
        _jsonl({"text": "a", "label": True}, {"text": "b", "label": 0}),
        rows=2,
        rejected={"label_out_of_task": 1},
        kept=["b"],
    ),
    Kind("binary_garbage.jsonl", bytes(range(256)) * 4, error="binary file"),
]


@pytest.fixture(scope="module")
def warehouse_template(tmp_path_factory) -> Path:
    """An empty warehouse with the project's DDL, copied for each kind (faster than the DDL each time)."""
    from llambert.warehouse import open_warehouse

    path = tmp_path_factory.mktemp("matrix") / "template.duckdb"
    with open_warehouse(path):
        pass
    return path


def _settings(tmp_path: Path, template: Path, source: str):
    import shutil

    settings = load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(tmp_path / "data"),
            "task": "imdb_sentiment",
            "sources": [{"name": "m", "path": source, "split": "train"}],
            "inbox": {"settle_seconds": 0},
        }
    )
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data").mkdir()
    shutil.copy(template, settings.warehouse_path)
    return settings


def _batch_rows(con, batch: str) -> tuple[int, dict[str, int], list[str]]:
    occ = con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = ?", [batch]).fetchone()[0]
    codes = dict(
        con.execute(
            "SELECT split_part(reason, ':', 1), count(*) FROM raw.rejected WHERE batch = ? GROUP BY 1", [batch]
        ).fetchall()
    )
    texts = [
        r[0]
        for r in con.execute(
            "SELECT c.text FROM raw.occurrences o JOIN (SELECT DISTINCT doc_id, text FROM raw.corpus) c USING (doc_id) "
            "WHERE o.batch = ? ORDER BY o.source_row",
            [batch],
        ).fetchall()
    ]
    return occ, codes, texts


def _check(con, kind: Kind, batch: str, stats: dict) -> None:
    occ, codes, texts = _batch_rows(con, batch)
    assert stats["input_rows"] == kind.rows and occ + sum(codes.values()) == kind.rows, (batch, occ, codes)
    assert codes == kind.rejected, batch
    assert set(codes) <= set(REJECT_REASONS)
    if kind.kept is not None:
        assert texts == kind.kept, batch  # byte for byte: nothing normalised, nothing re-encoded
    for file, row, reason in con.execute(
        "SELECT source_file, source_row, reason FROM raw.rejected WHERE batch = ?", [batch]
    ).fetchall():
        assert file.endswith(kind.name) and row is not None, reason
        assert re.search(r"column '|line \d", reason), reason  # names the column, or the line of a broken record


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_bad_input_through_initial_corpus_and_inbox(tmp_path, warehouse_template, kind):
    from llambert import pipeline
    from llambert.inbox import InboxError, claim_file, register_batch
    from llambert.warehouse import open_warehouse

    settings = _settings(tmp_path, warehouse_template, kind.name)
    f = tmp_path / "data" / kind.name
    f.write_bytes(kind.body)
    empty = {"raw.occurrences": 0, "raw.rejected": 0, "raw.corpus": 0, "raw.inbox_files": 0}

    with open_warehouse(settings.warehouse_path) as con:
        # 1. the initial corpus: a configured source
        if kind.error:
            with pytest.raises(ReaderError, match=kind.error) as e:
                pipeline.ingest_batch(con, settings)
            assert str(f) in str(e.value)
            assert {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in empty} == empty
        else:
            _check(con, kind, "initial", pipeline.ingest_batch(con, settings))

        # 2. the inbox: claimed (the pre-check), then the batch's run reads and writes it
        if kind.error:
            with pytest.raises(InboxError, match=kind.error) as e:
                claim_file(settings, f)
            assert str(f) in str(e.value)
            assert not (settings.inbox_dir / ".batches").exists() or not any(
                (settings.inbox_dir / ".batches").iterdir()
            )
            assert con.execute("SELECT count(*) FROM raw.occurrences WHERE batch <> 'initial'").fetchone()[0] == 0
            return
        batch, new = claim_file(settings, f)
        assert new
        _check(con, kind, batch.partition, pipeline.ingest_batch(con, settings, batch.partition))
        registered = register_batch(con, settings, batch.partition)
        assert (registered["input_rows"], registered["rejected_rows"]) == (kind.rows, sum(kind.rejected.values()))


def test_the_matrix_covers_every_reason_code():
    """Every reason code the readers use appears in the matrix (and REJECT_REASONS lists every code they use)."""
    from llambert.corpus import readers

    used = set(re.findall(r"\b([a-z_]+): (?:line|column)", Path(readers.__file__).read_text()))
    used |= set(re.findall(r'reason = f?"([a-z_]+):', Path(readers.__file__).read_text()))
    assert used <= set(REJECT_REASONS), used - set(REJECT_REASONS)
    covered = {code for k in KINDS for code in k.rejected}
    assert covered == set(REJECT_REASONS), set(REJECT_REASONS) - covered
    assert len(KINDS) >= 25
