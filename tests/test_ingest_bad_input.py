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
    p.write_bytes(b'{"id": 1, "text": "fine", "label": 1}\n{"id": 2, "text": "caf\xe9"}\n{"id": 3, "text": "ok", "label": "negative"}\n')
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
    assert rej["reason"][0] == "id_conflict: column 'source_id' value '7' has 2 different texts in this file (rows 0, 2)"


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
        ("data.parquet", b"id,text\n1,hello\n", r"not a parquet file \(no PAR1 magic bytes; it looks like text \(CSV\?\)\)"),
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
    settings = load_settings(overrides={
        "home": str(tmp_path / "home"), "data_dir": str(data), "task": "imdb_sentiment",
        "sources": [{"name": "a", "path": "a.csv", "split": "train"}, {"name": "b", "path": "b.jsonl", "split": "unsup"}],
    })
    settings.check_ready()
    with open_warehouse(settings.warehouse_path) as con:
        stats = pipeline.ingest_batch(con, settings)
        assert stats["input_rows"] == 9 and stats["accepted_rows"] == 4 and stats["rejected_rows"] == 5
        assert con.execute("SELECT count(*) FROM raw.occurrences").fetchone()[0] == 4
        assert con.execute("SELECT sum(n_copies) FROM raw.corpus").fetchone()[0] == 4  # 'dup' twice: one document
        codes = con.execute("SELECT source, source_row, split_part(reason, ':', 1) FROM raw.rejected ORDER BY 1, 2").fetchall()
        assert codes == [("a", 1, "empty_text"), ("a", 2, "invalid_utf8"), ("a", 3, "nul_byte"),
                         ("a", 4, "label_out_of_task"), ("b", 1, "invalid_json")]
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
        ({"student": {"model": "/no/such/model/dir"}}, "setting 'student.model': the directory /no/such/model/dir does not exist"),
        ({"task": "umls_related", "checks": {"min_minority_share": 0.5}}, None),  # possible for 2 labels (exactly balanced)
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
            settings.check_ready()
        return
    with pytest.raises(ConfigError, match=message):
        settings.check_ready()
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
    with pytest.raises(ConfigError, match=r"checks.min_minority_share' = 0.4 is impossible: task 'imdb_sentiment' has 3 labels"):
        settings.check_ready()
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
    "jsonl_truncated_line": ("trunc.jsonl", b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "also fine"}\n{"id": 3, "text": "cut sh',
                             3, {"invalid_json": 1}),
    "jsonl_garbage_line": ("garbage.jsonl", b'{"id": 1, "text": "fine"}\nthis is not json\n{"id": 3, "text": "ok"}\n',
                           3, {"invalid_json": 1}),
    "jsonl_garbage_first_line": ("garbage1.jsonl", b'garbage\n{"id": 1, "text": "fine"}\n{"id": 2, "text": "ok"}\n',
                                 3, {"invalid_json": 1}),
    "jsonl_mixed_types": ("mixed.jsonl", b'{"id": 1, "text": 42}\n{"id": "b", "text": ["a", "list"]}\n'
                          b'{"id": 3.5, "text": "fine", "label": "positive"}\n{"id": null, "text": "ok", "label": 1}\n'
                          b'{"id": 5, "text": {"nested": "x"}}\n', 5, {"text_not_string": 3}),
}


@pytest.fixture
def inbox_settings(tmp_path):
    return load_settings(overrides={"home": str(tmp_path / "home"), "data_dir": str(tmp_path), "task": "imdb_sentiment",
                                    "inbox": {"settle_seconds": 0}})


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
        rej = con.execute("SELECT source_row, reason FROM raw.rejected WHERE batch = ? ORDER BY source_row",
                          [batch.partition]).fetchall()
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
        "nocol.csv": (b"id,review\n1,caf\xe9\n", r"no text column 'text' \(columns: \['id', 'review'\]\).*inbox.text_column"),
        "nocol.jsonl": (b'{"review": "x"}\nnot json\n', r"no text column 'text' \(columns: \['review'\]\)"),
        "dup.csv": (b"id,text,label,text\n1,a,1,b\n", r"column 'text' appears 2 times in the header \(columns 2 and 4 of"),
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
                "SELECT batch, input_rows, rejected_rows FROM raw.inbox_files WHERE file_name = ?", [f.name]).fetchone()
            occ = con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = ?", [batch]).fetchone()[0]
            codes = dict(con.execute("SELECT split_part(reason, ':', 1), count(*) FROM raw.rejected WHERE batch = ? "
                                     "GROUP BY 1", [batch]).fetchall())
            assert (input_rows, rejected_rows, occ + rejected_rows) == (n_input, sum(expected.values()), n_input), kind
            assert codes == expected, (kind, codes)
            assert f"batch {batch}: {n_input} rows ({rejected_rows} rejected)" in out.stdout
