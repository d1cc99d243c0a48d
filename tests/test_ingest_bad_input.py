"""Bad input at ingestion: every bad row is rejected with a reason naming its column (file and row are
columns of raw.rejected), every unreadable file raises an error naming the file, one bad row never
sinks its batch, and configuration errors stop the run before any work starts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from llambert.config import ConfigError, CorpusSource, load_settings
from llambert.corpus.readers import REJECT_REASONS, ReaderError, read_source
from llambert.preflight import check_ready
from tests.test_batch_recovery import initial_state, recovery  # noqa: F401 (fixtures: a warehouse with a champion)

LABELS = {"negative": 0, "positive": 1}


def _read(path: Path, **source) -> tuple[pl.DataFrame, pl.DataFrame]:
    result = read_source(CorpusSource(name="t", path=str(path), **source), path, LABELS)
    return result.rows, result.rejected


def _reasons(rejected: pl.DataFrame) -> dict[int, str]:
    return dict(zip(rejected["source_row"].to_list(), rejected["reason"].to_list()))


def _csv(tmp_path: Path, body: bytes, name: str = "in.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(body)
    return p


def test_empty_and_whitespace_text_are_rejected(tmp_path):
    p = _csv(tmp_path, b'id,text,label\n1,good review,1\n2,,0\n3,"   \t ",1\n4,"\n\n",0\n')
    rows, rej = _read(p)
    assert rows["source_id"].to_list() == ["1"]
    reasons = _reasons(rej)
    assert set(reasons) == {1, 2, 3}
    assert all(r.startswith(("empty_text: column 'text'", "missing_text: column 'text'")) for r in reasons.values())
    assert (rej["source_file"] == str(p)).all()


def test_invalid_utf8_in_csv_rejects_only_that_row(tmp_path):
    # polars refuses the whole file; the careful reader keeps the good rows.
    p = _csv(tmp_path, b'id,text,label\n1,fine,1\n2,caf\xe9 au lait,0\n3,"also\nfine",1\n')
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["fine", "also\nfine"]
    assert rej["source_row"].to_list() == [1]
    assert rej["reason"][0].startswith("invalid_utf8: column 'text' is not valid UTF-8")
    assert "\ufffd" in rej["text"][0]  # kept, readable, in raw.rejected


def test_invalid_utf8_in_jsonl_rejects_only_that_line(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(
        b'{"id": 1, "text": "fine", "label": 1}\n{"id": 2, "text": "caf\xe9"}\n{"id": 3, "text": "ok", "label": "negative"}\n'
    )
    rows, rej = _read(p)
    assert rows["source_id"].to_list() == ["1", "3"]
    assert rows["gold_label"].to_list() == [1, 0]
    assert rej["reason"].to_list() == ["invalid_utf8: line 2 is not valid UTF-8 (byte 22)"]


def test_invalid_json_line_and_non_object_line(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"text": "good"}\n{"text": "unterminated\n[1, 2]\n{"text": 42}\n')
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["good"]
    reasons = rej["reason"].to_list()
    assert reasons[0].startswith("invalid_json: line 2")
    assert reasons[1] == "malformed_row: line 3 is a JSON list, not an object"
    assert reasons[2] == "text_not_string: column 'text' holds a JSON int (line 4)"


def test_invalid_utf8_in_aclimdb_folder(tmp_path):
    for sub, name, body in (("pos", "1_9.txt", b"great"), ("neg", "2_1.txt", b"awful \xff\xfe film")):
        (tmp_path / "train" / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / sub / name).write_bytes(body)
    rows, rej = _read(tmp_path, format="aclimdb")
    assert rows["text"].to_list() == ["great"]
    assert rej["reason"][0].startswith("invalid_utf8: column 'text' of train/neg/2_1.txt")


def test_nul_bytes_are_rejected_in_csv_and_parquet(tmp_path):
    p = _csv(tmp_path, b'id,text\n1,"a\x00b"\n2,clean\n')
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["clean"]
    assert rej["reason"].to_list() == ["nul_byte: column 'text' contains a NUL byte"]
    q = tmp_path / "in.parquet"
    pl.DataFrame({"text": ["x\x00y", "fine"], "label": [1, 0]}).write_parquet(q)
    rows, rej = _read(q)
    assert rows["text"].to_list() == ["fine"] and rej["source_row"].to_list() == [0]


def test_missing_or_misnamed_text_column_names_file_and_columns(tmp_path):
    p = _csv(tmp_path, b"id,review,label\n1,good,1\n")
    with pytest.raises(ReaderError) as e:
        _read(p)
    msg = str(e.value)
    assert str(p) in msg and "'text'" in msg and "['id', 'review', 'label']" in msg and "text_column" in msg
    q = _csv(tmp_path, b"id,Text,label\n1,good,1\n", "cased.csv")
    with pytest.raises(ReaderError, match="Did you mean 'Text'"):
        _read(q)
    j = tmp_path / "in.jsonl"
    j.write_text('{"body": "x"}\n')
    with pytest.raises(ReaderError, match=r"no text column 'text' \(columns: \['body'\]\)"):
        _read(j)


def test_labels_outside_the_task_are_rejected(tmp_path):
    p = tmp_path / "in.parquet"
    pl.DataFrame({"text": ["a", "b", "c", "d"], "label": [0, 1, 7, None]}).write_parquet(p)
    rows, rej = _read(p)
    assert rows["gold_label"].to_list() == [0, 1, None]  # null = unlabeled, kept
    assert rej["source_row"].to_list() == [2]
    assert rej["reason"][0].startswith("label_out_of_task: column 'label' value 7")
    q = _csv(tmp_path, b"text,label\nx,positive\ny,maybe\nz,NEGATIVE\n")
    rows, rej = _read(q)
    assert rows["gold_label"].to_list() == [1, 0]
    assert rej["reason"][0].startswith("label_out_of_task: column 'label' value 'maybe'")


def test_same_id_with_different_text_is_rejected_same_text_is_a_duplicate(tmp_path):
    p = _csv(tmp_path, b"id,text\n7,first version\n8,same\n7,second version\n8,same\n9,other\n")
    rows, rej = _read(p)
    assert sorted(rows["source_id"].to_list()) == ["8", "8", "9"]  # exact duplicates stay (n_copies in raw.corpus)
    assert rej["source_row"].to_list() == [0, 2]
    assert (
        rej["reason"][0] == "id_conflict: column 'source_id' value '7' has 2 different texts in this file (rows 0, 2)"
    )


def test_five_megabyte_document_is_rejected_above_the_configured_size(tmp_path):
    big = "word " * (1024 * 1024)  # 5 MiB
    p = tmp_path / "in.parquet"
    pl.DataFrame({"text": [big, "short"]}).write_parquet(p)
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["short"]
    assert rej["reason"][0].startswith(f"too_long: column 'text' has {len(big)} bytes, above max_text_bytes=1000000")
    rows, rej = _read(p, max_text_bytes=10_000_000)  # raising the bound accepts it
    assert rows.height == 2 and rej.height == 0


def test_csv_with_embedded_newlines_and_quotes_parses_exactly(tmp_path):
    texts = ['He said "wow",\nthen left.', "plain", 'a ""quoted"" word, and\r\na CRLF', ""]
    body = "id,text,label\n" + "".join(f'{i},"{t.replace(chr(34), chr(34) * 2)}",1\n' for i, t in enumerate(texts))
    p = _csv(tmp_path, body.encode())
    rows, rej = _read(p)
    assert rows["text"].to_list() == texts[:3]
    assert rej["source_row"].to_list() == [3]
    # The careful reader (used when polars refuses a file) parses the same way.
    q = _csv(tmp_path, body.encode() + b'9,"bad \xff byte",1\n', "mixed.csv")
    rows2, rej2 = _read(q)
    assert rows2["text"].to_list() == texts[:3]
    assert [r.split(":")[0] for r in rej2["reason"]] == ["empty_text", "invalid_utf8"]


def test_ragged_csv_row_is_rejected_alone(tmp_path):
    p = _csv(tmp_path, b"id,text\n1,ok\n2,too,many,fields\n3,fine\n")
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["ok", "fine"]
    assert rej["reason"].to_list() == ["malformed_row: line 3 has 4 fields, the header has 2"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "data.parquet",
            b"id,text\n1,hello\n",
            r"not a parquet file \(no PAR1 magic bytes; it looks like text \(CSV\?\)\)",
        ),
        ("data.csv", b"PAR1" + b"\x00" * 64, "this is a parquet file; rename it .parquet"),
        ("data.jsonl", gzip.compress(b'{"text": "x"}\n'), "expected jsonl text but this is a gzip-compressed file"),
        ("data.jsonl", b"id,text\n1,hello\n", "not JSON lines"),
        ("data.csv", b"", r"the file is empty \(0 bytes\)"),
        ("data.csv", bytes(range(256)) * 4, "binary file"),
        ("data.txt", b"hello", "unknown file type '.txt'"),
    ],
)
def test_file_that_is_not_what_its_extension_says(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ReaderError, match=message) as e:
        _read(p)
    assert str(p) in str(e.value)


def test_one_bad_row_never_sinks_the_batch_and_nothing_is_lost(tmp_path):
    """Through the real ingest step into DuckDB: every input row is accepted or in raw.rejected."""
    from llambert import contracts, pipeline
    from llambert.warehouse import open_warehouse

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_bytes(
        b'id,text,label\n1,"good, ""quoted""\nfilm",1\n2,,0\n3,caf\xe9,1\n4,"x\x00",0\n5,fine,9\n6,dup,1\n7,dup,1\n'
    )
    (data / "b.jsonl").write_bytes(b'{"id": 1, "text": "json ok", "label": "negative"}\n{oops\n')
    settings = load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(data),
            "task": "imdb_sentiment",
            "sources": [
                {"name": "a", "path": "a.csv", "split": "train"},
                {"name": "b", "path": "b.jsonl", "split": "unsup"},
            ],
        }
    )
    check_ready(settings)
    with open_warehouse(settings.warehouse_path) as con:
        stats = pipeline.ingest_batch(con, settings)
        assert stats["input_rows"] == 9 and stats["accepted_rows"] == 4 and stats["rejected_rows"] == 5
        assert con.execute("SELECT count(*) FROM raw.occurrences").fetchone()[0] == 4
        assert con.execute("SELECT sum(n_copies) FROM raw.corpus").fetchone()[0] == 4  # 'dup' twice: one document
        codes = con.execute(
            "SELECT source, source_row, split_part(reason, ':', 1) FROM raw.rejected ORDER BY 1, 2"
        ).fetchall()
        assert codes == [
            ("a", 1, "empty_text"),
            ("a", 2, "invalid_utf8"),
            ("a", 3, "nul_byte"),
            ("a", 4, "label_out_of_task"),
            ("b", 1, "invalid_json"),
        ]
        assert all(c in REJECT_REASONS for _, _, c in codes)
        results = {r.contract: r for r in contracts.evaluate(con, settings, "raw.corpus", "initial")}
    assert results["rows_accounted"].passed, results["rows_accounted"].description
    assert results["rejected_values"].passed
    # 5 of 9 rejected is above the default 5% bound: a warning that shows the rejected rows.
    share = results["rejected_share"]
    assert not share.passed and not share.blocking and share.failing.height == 5
    assert "invalid_utf8" in share.description


@pytest.mark.parametrize(
    "override, message",
    [
        ({"task": "no_such_task"}, "setting 'task': unknown task 'no_such_task'"),
        ({"teacher": {"model": "llama-9000-typo"}}, "setting 'teacher.model': unknown model 'llama-9000-typo'"),
        (
            {"student": {"model": "/no/such/model/dir"}},
            "setting 'student.model': the directory /no/such/model/dir does not exist",
        ),
        (
            {"task": "umls_related", "checks": {"min_minority_share": 0.5}},
            None,
        ),  # possible for 2 labels (exactly balanced)
        ({"data_dir": "/no/such/folder"}, "setting 'data_dir': /no/such/folder is not a folder"),
        ({"sources": [{"name": "s", "path": "/etc/hostname"}]}, r"setting 'sources\[0\]' \(s\): .*unknown file type"),
    ],
)
def test_configuration_errors_fail_before_any_work(tmp_path, monkeypatch, capsys, override, message):
    from dagster_project.run import main

    monkeypatch.setenv("LLAMBERT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    settings = load_settings(overrides=override | {"data_dir": override.get("data_dir", str(tmp_path))})
    if message is None:
        with pytest.raises(ConfigError, match="corpus source 'imdb'"):  # gets past the bound, stops at the data
            check_ready(settings)
        return
    with pytest.raises(ConfigError, match=message):
        check_ready(settings)
    args = [f"--set=data_dir={override.get('data_dir', str(tmp_path))}"]
    for k, v in override.items():
        if k != "data_dir":
            args.append(f"--set={k}={json.dumps(v)}")
    assert main(args) == 2
    assert "llambert: " in capsys.readouterr().err
    assert not (tmp_path / "home").exists() and not (tmp_path / "dagster_home").exists()  # nothing started


def test_impossible_balance_bound_for_three_labels(tmp_path):
    import yaml

    task = yaml.safe_load((Path(__file__).parent.parent / "llambert/tasks/imdb_sentiment.yaml").read_text())
    task["labels"].append({"id": 2, "name": "mixed"})
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(task))
    settings = load_settings(overrides={"task": str(path), "checks": {"min_minority_share": 0.4}})
    with pytest.raises(
        ConfigError, match=r"checks.min_minority_share' = 0.4 is impossible: task 'imdb_sentiment' has 3 labels"
    ):
        check_ready(settings)
    with pytest.raises(ConfigError, match="checks.min_minority_share"):  # above 0.5 never validates
        load_settings(overrides={"checks": {"min_minority_share": 0.6}})


# -- the inbox pre-check leaves row-level problems to the readers (issue 13, defect 2) ------------
def _ten_rows(bad_line: bytes, at: int = 4) -> bytes:
    """A CSV of 10 data rows (ids 0-9) whose row ``at`` is ``bad_line``."""
    rows = [b"%d,review number %d,1" % (i, i) for i in range(10)]
    rows[at] = bad_line
    return b"id,text,label\n" + b"\n".join(rows) + b"\n"


# (file name, bytes, input rows, {reason code: rows rejected})
PRECHECK_CASES = {
    "latin1_row": ("latin1.csv", _ten_rows(b"4,caf\xe9 cr\xe8me,1"), 10, {"invalid_utf8": 1}),
    "invalid_utf8_late": ("late.csv", _ten_rows(b"9,bad \xff\xfe bytes,0", at=9), 10, {"invalid_utf8": 1}),
    "invalid_utf8_header": ("header.csv", b"id,text,label,not\xe9s\n1,fine,1,x\n2,also fine,0,y\n", 2, {}),
    "ragged_rows": ("ragged.csv", _ten_rows(b"4,too,many,fields,here"), 10, {"malformed_row": 1}),
    "unbalanced_quote": ("quote.csv", _ten_rows(b'4,"never closed,1'), 10, {"malformed_row": 1}),
    "jsonl_truncated_line": (
        "trunc.jsonl",
        b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "also fine"}\n{"id": 3, "text": "cut sh',
        3,
        {"invalid_json": 1},
    ),
    "jsonl_garbage_line": (
        "garbage.jsonl",
        b'{"id": 1, "text": "fine"}\nthis is not json\n{"id": 3, "text": "ok"}\n',
        3,
        {"invalid_json": 1},
    ),
    "jsonl_garbage_first_line": (
        "garbage1.jsonl",
        b'garbage\n{"id": 1, "text": "fine"}\n{"id": 2, "text": "ok"}\n',
        3,
        {"invalid_json": 1},
    ),
    "jsonl_mixed_types": (
        "mixed.jsonl",
        b'{"id": 1, "text": 42}\n{"id": "b", "text": ["a", "list"]}\n'
        b'{"id": 3.5, "text": "fine", "label": "positive"}\n{"id": null, "text": "ok", "label": 1}\n'
        b'{"id": 5, "text": {"nested": "x"}}\n',
        5,
        {"text_not_string": 3},
    ),
}


@pytest.fixture
def inbox_settings(tmp_path):
    return load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(tmp_path),
            "task": "imdb_sentiment",
            "inbox": {"settle_seconds": 0},
        }
    )


@pytest.mark.parametrize("kind", list(PRECHECK_CASES))
def test_inbox_precheck_claims_files_with_bad_rows_and_the_batch_rejects_only_those(tmp_path, inbox_settings, kind):
    """`llambert ingest FILE` refused these whole files (rc 2, "cannot be read as csv: invalid utf-8", "Syntax at
    character 0"); now the file is claimed and the batch's reader rejects only the bad rows, naming them."""
    from llambert import pipeline
    from llambert.inbox import check_inbox_file, claim_file, scan_inbox
    from llambert.warehouse import open_warehouse

    name, body, n_input, expected = PRECHECK_CASES[kind]
    f = tmp_path / name
    f.write_bytes(body)
    check_inbox_file(inbox_settings, f)
    batch, new = claim_file(inbox_settings, f)
    assert new
    with open_warehouse(inbox_settings.warehouse_path) as con:
        stats = pipeline.ingest_batch(con, inbox_settings, batch.partition)
        occ = con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = ?", [batch.partition]).fetchone()[0]
        rej = con.execute(
            "SELECT source_row, reason FROM raw.rejected WHERE batch = ? ORDER BY source_row", [batch.partition]
        ).fetchall()
    assert stats["input_rows"] == n_input and occ + len(rej) == n_input, (occ, rej)
    codes: dict[str, int] = {}
    for _, reason in rej:
        codes[reason.split(":")[0]] = codes.get(reason.split(":")[0], 0) + 1
    assert codes == expected, rej
    assert all(code in REJECT_REASONS for code in codes)
    # The sensor's path claims it too (the inbox folder, scanned).
    inbox_settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    (inbox_settings.inbox_dir / f"again-{name}").write_bytes(body + b"\n")
    scan = scan_inbox(inbox_settings, now=float("inf"))
    assert [b.file_name for b in scan.claimed] == [f"again-{name}"] and scan.refused == []


def test_inbox_precheck_still_refuses_what_makes_the_whole_file_unusable(tmp_path, inbox_settings):
    from llambert.inbox import InboxError, claim_file

    cases = {
        "nocol.csv": (
            b"id,review\n1,caf\xe9\n",
            r"no text column 'text' \(columns: \['id', 'review'\]\).*inbox.text_column",
        ),
        "nocol.jsonl": (b'{"review": "x"}\nnot json\n', r"no text column 'text' \(columns: \['review'\]\)"),
        "dup.csv": (
            b"id,text,label,text\n1,a,1,b\n",
            r"column 'text' appears 2 times in the header \(columns 2 and 4 of",
        ),
        "packed.csv": (gzip.compress(b"text\nx\n"), "gzip-compressed"),
        "cut.parquet": (b"PAR1" + b"\x00" * 40, "cannot be read as parquet"),
    }
    for name, (body, message) in cases.items():
        f = tmp_path / name
        f.write_bytes(body)
        with pytest.raises(InboxError, match=message):
            claim_file(inbox_settings, f)
    assert not (inbox_settings.inbox_dir / ".batches").exists()  # nothing claimed


def test_ingest_now_cli_takes_files_with_bad_rows_together(recovery, tmp_path):
    """The real `llambert ingest A B C D --now` (a subprocess, a real Dagster instance and warehouse): it used to
    stop with rc 2 on the first file ("cannot be read as csv: invalid utf-8 sequence"), 0 rows ingested."""
    import subprocess
    import sys

    from llambert.config import PROJECT_ROOT

    settings, cfg = recovery["settings"], recovery["cfg"]
    picked = ["latin1_row", "unbalanced_quote", "jsonl_garbage_line", "jsonl_mixed_types"]
    files = []
    for kind in picked:
        name, body, _, _ = PRECHECK_CASES[kind]
        files.append(tmp_path / name)
        files[-1].write_bytes(body)
    cmd = [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "ingest", *map(str, files), "--now"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for kind, f in zip(picked, files):
            _, _, n_input, expected = PRECHECK_CASES[kind]
            batch, input_rows, rejected_rows = con.execute(
                "SELECT batch, input_rows, rejected_rows FROM raw.inbox_files WHERE file_name = ?", [f.name]
            ).fetchone()
            occ = con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = ?", [batch]).fetchone()[0]
            codes = dict(
                con.execute(
                    "SELECT split_part(reason, ':', 1), count(*) FROM raw.rejected WHERE batch = ? GROUP BY 1", [batch]
                ).fetchall()
            )
            assert (input_rows, rejected_rows, occ + rejected_rows) == (n_input, sum(expected.values()), n_input), kind
            assert codes == expected, (kind, codes)
            assert f"batch {batch}: {n_input} rows ({rejected_rows} rejected)" in out.stdout


# -- bad values are rejected with a reason, never a crash or a silent change (issue 13, defect 4) -----
def test_lone_surrogate_in_jsonl_rejects_that_line_not_the_batch(tmp_path):
    """`{"text": "\\ud800 x"}` decodes to a str no encoder takes: it was a UnicodeEncodeError for the whole batch."""
    from llambert import pipeline
    from llambert.warehouse import open_warehouse

    data = tmp_path / "data"
    data.mkdir()
    (data / "s.jsonl").write_text(
        '{"id": 1, "text": "fine"}\n{"id": 2, "text": "\\ud800 x"}\n'
        '{"id": "\\udfff", "text": "id broken"}\n{"id": 4, "text": "pair \\ud83d\\ude00 ok"}\n'
    )
    rows, rej = _read(data / "s.jsonl")
    assert rows["text"].to_list() == ["fine", "pair \U0001f600 ok"]  # an escaped surrogate pair is one emoji
    assert rej["reason"].to_list() == [
        "invalid_utf8: line 2: column 'text' holds a lone surrogate (\\ud800), which is not valid UTF-8 "
        "(kept with U+FFFD in its place)",
        "invalid_utf8: line 3: column 'id' holds a lone surrogate (\\udfff), which is not valid UTF-8 "
        "(kept with U+FFFD in its place)",
    ]
    assert rej["text"].to_list() == ["\ufffd x", "id broken"] and rej["source_id"][1] == "\ufffd"
    settings = load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(data),
            "sources": [{"name": "s", "path": "s.jsonl", "split": "unsup"}],
        }
    )
    with open_warehouse(settings.warehouse_path) as con:
        stats = pipeline.ingest_batch(con, settings)
        assert (stats["input_rows"], stats["accepted_rows"], stats["rejected_rows"]) == (4, 2, 2)
        assert con.execute("SELECT text FROM raw.rejected ORDER BY source_row").fetchall() == [
            ("\ufffd x",),
            ("id broken",),
        ]


def test_binary_text_column_is_decoded_row_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "bin.parquet"
    pq.write_table(
        pa.table(
            {"text": pa.array([b"ok", b"caf\xc3\xa9", b"bad \xff\xfe", None], pa.binary()), "label": [1, 0, 1, 0]}
        ),
        p,
    )
    rows, rej = _read(p)  # was polars ComputeError "invalid utf8" for the whole file
    assert rows["text"].to_list() == ["ok", "café"] and rows["gold_label"].to_list() == [1, 0]
    assert _reasons(rej) == {
        2: "invalid_utf8: column 'text' (binary) is not valid UTF-8 (byte 4)",
        3: "missing_text: column 'text' is null",
    }
    assert rej["text"][0] == "bad \ufffd\ufffd"


@pytest.mark.parametrize(
    "values, dtype_name",
    [
        ([["a", "b"], ["c"], None], "List(String)"),  # was InvalidOperationError
        ([111, 222, None], "Int64"),  # was silently cast to "111" and labeled
        ([1.5, 2.0, None], "Float64"),
        ([True, False, None], "Boolean"),
    ],
)
def test_non_string_text_column_rejects_its_rows(tmp_path, values, dtype_name):
    p = tmp_path / "t.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "text": values}).write_parquet(p)
    rows, rej = _read(p)
    assert rows.height == 0 and rej.height == 3
    assert set(rej["reason"]) == {
        f"text_not_string: column 'text' is {dtype_name}, not strings; values are not cast "
        f"to text (write the texts as strings)"
    }
    assert rej["text"][0] is not None  # the value is kept, as text, in raw.rejected
    assert rej["text"][2] is None


def test_duplicate_text_header_is_a_file_level_error(tmp_path):
    p = _csv(tmp_path, b"id,text,label,text\n1,first,1,second\n")  # polars kept 'first', dropped 'second'
    with pytest.raises(ReaderError, match=r"column 'text' appears 2 times in the header \(columns 2 and 4 of") as e:
        _read(p)
    assert str(p) in str(e.value)
    q = _csv(tmp_path, b"id,text,note,note\n1,kept,a,b\n2,also,c,d\n", "unused.csv")  # a repeated unused column is fine
    rows, rej = _read(q)
    assert rows["text"].to_list() == ["kept", "also"] and rej.height == 0
    # the careful reader (invalid UTF-8 further down) gives the same
    r = _csv(tmp_path, b"id,text,note,note\n1,kept,a,b\n2,caf\xe9,c,d\n", "unused2.csv")
    rows, rej = _read(r)
    assert rows["text"].to_list() == ["kept"] and rej["reason"][0].startswith("invalid_utf8: column 'text'")


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", "\u00ad", " \u200b\t\ufeff\n", "\ufe0f"]
)
def test_text_of_only_invisible_characters_is_empty(tmp_path, invisible):
    p = tmp_path / "z.parquet"
    kept = ["a\u200bb", "\U0001f44d", "\u05e9\u05dc\u05d5\u05dd\u200f", "<b>bold</b> &amp;"]  # visible text stays as is
    pl.DataFrame({"text": [invisible, *kept]}).write_parquet(p)
    rows, rej = _read(p)
    assert rows["text"].to_list() == kept
    assert rej["reason"].to_list() == [
        "empty_text: column 'text' is empty, or only whitespace or invisible characters (zero-width, BOM, soft hyphen)"
    ]


def test_boolean_labels_are_rejected_on_every_path(tmp_path):
    """A parquet Boolean label column became 1/0 without a word; JSON true was rejected as 'True'."""
    expected = (
        "label_out_of_task: column 'label' value {!r} is a boolean, not a label of the task; use the label "
        "ids [0, 1] or names ['negative', 'positive']"
    )
    p = tmp_path / "b.parquet"
    pl.DataFrame({"text": ["a", "b", "c"], "label": [True, False, None]}).write_parquet(p)
    rows, rej = _read(p)
    assert rows["text"].to_list() == ["c"] and rows["gold_label"].to_list() == [None]
    assert rej["reason"].to_list() == [expected.format(True), expected.format(False)]
    j = tmp_path / "b.jsonl"
    j.write_text('{"text": "a", "label": true}\n{"text": "b", "label": false}\n{"text": "c", "label": 1}\n')
    rows, rej = _read(j)
    assert rows["gold_label"].to_list() == [1]
    assert rej["reason"].to_list() == [expected.format("true"), expected.format("false")]
    c = _csv(tmp_path, b"text,label\na,True\nb,FALSE\nc,positive\n")
    rows, rej = _read(c)
    assert rows["gold_label"].to_list() == [1]
    assert rej["reason"].to_list() == [expected.format("True"), expected.format("FALSE")]


def _quote_file(tmp_path: Path, bad: bytes, name: str, tail: bytes = b"") -> Path:
    lines = [b"%d,row %d" % (i, i) for i in range(10)]
    lines[4] = bad
    return _csv(tmp_path, b"id,text\n" + b"\n".join(lines) + b"\n" + tail, name)


@pytest.mark.parametrize(
    "bad, tail, how",
    [
        (b'4,"never closed', b"", "its quoted field never closes before the end of the file"),
        (b'4,"closes later', b'10,"quoted" text\n', "its quoted field closes on line 12 followed by text"),
        (
            b'4,"runs on',
            b'10,ends here",extra\n',
            "its quoted field runs to line 12 and leaves 3 fields, the header has 2",
        ),
    ],
)
def test_unbalanced_quote_rejects_only_its_line(tmp_path, bad, tail, how):
    """10 rows in, 9 accounted before: the quote swallowed the rows after it (polars: silently, into one cell)."""
    p = _quote_file(tmp_path, bad, "q.csv", tail)
    rows, rej = _read(p)
    n_tail = tail.count(b"\n")
    assert rows.height + rej.height == 10 + n_tail
    assert rows["source_id"].to_list()[:9] == ["0", "1", "2", "3", "5", "6", "7", "8", "9"]
    assert rej["source_row"][0] == 4 and rej["source_id"][0] == "4"
    assert rej["reason"][0] == (
        f"malformed_row: line 6 has an unbalanced quote ({how}); the lines after it are read as rows of their own"
    )
    assert rej["text"][0] == bad.decode()  # the raw line, to see what is wrong


def test_quote_inside_a_quoted_field_is_rejected_not_dropped(tmp_path):
    p = _csv(tmp_path, b'id,text\n1,"He said "wow" ok"\n2,"fine ""quoted"" text"\n3,a quote" inside\n')
    rows, rej = _read(p)  # polars read 'He said wow ok' without a word
    assert rows["text"].to_list() == ['fine "quoted" text', 'a quote" inside']
    assert rej["reason"].to_list() == [
        "malformed_row: line 2 has a quote inside a quoted field (',' expected after '\"'); double it (\"\") or quote "
        "the whole field"
    ]


def test_fast_csv_path_keeps_every_row_or_hands_over(tmp_path, monkeypatch):
    """polars reads clean files (same rows as the careful reader); a file it may have misread goes to the careful one.

    polars raises on a quote that runs to the end of the file, but merges rows without a word when a
    later quote closes the field (10 lines in, 7 rows out) and drops a quote inside a quoted field.
    """
    from llambert.corpus import readers

    clean = _csv(tmp_path, b'id,text\n1,"a, ""quoted"" one"\n2,plain\n3,\xf0\x9f\x91\x8d\n', "clean.csv")
    data = clean.read_bytes()
    careful_rows = readers._read_csv_careful(clean, data, "text").drop(readers._REASON).rows()
    calls = []
    real = readers._read_csv_careful
    monkeypatch.setattr(readers, "_read_csv_careful", lambda *a: calls.append(a[0].name) or real(*a))
    fast = readers._read_csv(clean, CorpusSource(name="t", path=str(clean)))
    assert calls == [] and fast.rows() == careful_rows

    lines = [b"%d,row %d" % (i, i) for i in range(10)]
    lines[4], lines[7] = b'4,"opens here', b'7,closes here"'
    merged = _csv(tmp_path, b"id,text\n" + b"\n".join(lines) + b"\n", "merged.csv")
    assert pl.read_csv(merged, infer_schema_length=0).height == 7  # polars alone: no error, 3 rows inside one cell
    _read(merged)
    stray = _csv(tmp_path, b'id,text\n1,"He said "wow" ok"\n', "stray.csv")
    assert pl.read_csv(stray, infer_schema_length=0)["text"].to_list() == ["He said wow ok"]  # polars drops the quotes
    _read(stray)
    assert calls == ["merged.csv", "stray.csv"]  # both handed to the careful reader
