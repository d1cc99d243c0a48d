"""Corpus readers: parquet, CSV, JSONL and the original aclImdb folder layout, into one shape.

Every reader returns a polars DataFrame with the columns of ``CORPUS_COLUMNS``. Rows that
cannot be used are not dropped: they come back in a second frame with a reason, so the
ingest step can keep them in ``raw.rejected``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llambert.config import CorpusSource

CORPUS_SCHEMA = {
    "source": pl.Utf8,
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "source_id": pl.Utf8,
    "split": pl.Utf8,
    "text": pl.Utf8,
    "gold_label": pl.Int64,
}
CORPUS_COLUMNS = list(CORPUS_SCHEMA)
REJECTED_SCHEMA = {**CORPUS_SCHEMA, "reason": pl.Utf8}

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_ACLIMDB_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


class ReaderError(ValueError):
    """The input cannot be read at all; the message names the file and what to fix."""


@dataclass
class ReadResult:
    rows: pl.DataFrame
    rejected: pl.DataFrame


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        if (path / "train").is_dir() or (path / "test").is_dir() or (path / "pos").is_dir():
            return "aclimdb"
        raise ReaderError(f"{path} is a folder but not in the aclImdb layout (train/, test/ with pos/, neg/, unsup/)")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReaderError(
            f"{path}: unknown file type '{path.suffix}'. Use .parquet, .csv or .jsonl, or set the source's format."
        )
    return fmt


def _sniff(path: Path, fmt: str) -> None:
    """Catch a file that is not what its extension says before a confusing parser error."""
    with open(path, "rb") as f:
        head = f.read(4)
    if fmt == "parquet" and head != b"PAR1":
        raise ReaderError(f"{path}: not a parquet file (no PAR1 magic bytes); is it really .parquet?")
    if fmt in ("csv", "jsonl") and head == b"PAR1":
        raise ReaderError(f"{path}: this is a parquet file; rename it .parquet or set format: parquet")


def read_source(source: CorpusSource, path: Path, labels: dict[str, int] | None = None) -> ReadResult:
    """Read one configured source into corpus rows + rejected rows.

    ``labels`` maps label names to ids, so a text label column ("positive") is accepted too.
    """
    if not path.exists():
        raise ReaderError(f"source '{source.name}': {path} does not exist")
    fmt = detect_format(path, source.format)
    if fmt == "aclimdb":
        frame = _read_aclimdb(path)
        return _normalise(frame, source, path, "text", "id", "label", labels, split_from_frame=True)
    _sniff(path, fmt)
    try:
        if fmt == "parquet":
            frame = pl.read_parquet(path)
        elif fmt == "csv":
            frame = pl.read_csv(path, infer_schema_length=0, quote_char='"')
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except Exception as e:  # polars raises several types; the message is what matters
        raise ReaderError(f"{path}: cannot be read as {fmt}: {e}") from e
    return _normalise(frame, source, path, source.text_column, source.id_column, source.label_column, labels)


def _read_aclimdb(root: Path) -> pl.DataFrame:
    """The Stanford release: {split}/{pos,neg,unsup}/{id}_{rating}.txt."""
    records = []
    base = root
    splits = [d for d in ("train", "test") if (root / d).is_dir()] or [""]
    for split in splits:
        for sub, label in (("neg", 0), ("pos", 1), ("unsup", None)):
            folder = base / split / sub if split else base / sub
            if not folder.is_dir():
                continue
            for f in sorted(folder.glob("*.txt"), key=lambda p: p.name):
                m = _ACLIMDB_NAME.match(f.name)
                file_id = int(m.group(1)) if m else f.stem
                raw = f.read_bytes()
                records.append(
                    {
                        "id": f"{split}/{sub}/{file_id}" if split else f"{sub}/{file_id}",
                        "text": raw,
                        "label": label,
                        "split": "unsup" if sub == "unsup" else (split or sub),
                        "file": str(f.relative_to(root)),
                    }
                )
    if not records:
        raise ReaderError(f"{root}: no .txt reviews found in the aclImdb layout")
    texts = []
    for r in records:
        try:
            texts.append(r["text"].decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)  # rejected below with reason invalid_utf8
    return pl.DataFrame(
        {
            "id": [r["id"] for r in records],
            "text": texts,
            "label": [r["label"] for r in records],
            "split": [r["split"] for r in records],
            "_invalid_utf8": [t is None for t in texts],
        },
        schema_overrides={"label": pl.Int64},
    )


def _normalise(
    frame: pl.DataFrame,
    source: CorpusSource,
    path: Path,
    text_col: str,
    id_col: str | None,
    label_col: str | None,
    labels: dict[str, int] | None,
    split_from_frame: bool = False,
) -> ReadResult:
    if text_col not in frame.columns:
        raise ReaderError(
            f"{path}: no text column '{text_col}' (columns: {frame.columns}). "
            f"Set text_column for source '{source.name}'."
        )
    n = frame.height
    out = pl.DataFrame(
        {
            "source": [source.name] * n,
            "source_file": [str(path)] * n,
            "source_row": list(range(n)),
        },
        schema={"source": pl.Utf8, "source_file": pl.Utf8, "source_row": pl.Int64},
    )
    ids = frame[id_col].cast(pl.Utf8) if id_col and id_col in frame.columns else pl.Series([None] * n, dtype=pl.Utf8)
    if split_from_frame or (source.split is None and "split" in frame.columns):
        split = frame["split"].cast(pl.Utf8)
    else:
        split = pl.Series([source.split or path.stem] * n, dtype=pl.Utf8)
    text = frame[text_col]
    if text.dtype != pl.Utf8:
        text = text.cast(pl.Utf8, strict=False)
    out = out.with_columns(source_id=ids, split=split, text=text)

    gold = pl.Series([None] * n, dtype=pl.Int64)
    label_reason = pl.Series([None] * n, dtype=pl.Utf8)
    if label_col and label_col in frame.columns:
        gold, bad = _parse_labels(frame[label_col], labels)
        label_reason = pl.Series(
            [f"label_out_of_task: column '{label_col}' value {v!r}" if b else None for v, b in zip(frame[label_col].to_list(), bad.to_list())],
            dtype=pl.Utf8,
        )
    invalid = frame["_invalid_utf8"] if "_invalid_utf8" in frame.columns else pl.Series([False] * n, dtype=pl.Boolean)
    out = out.with_columns(gold_label=gold, _label_reason=label_reason, _invalid=invalid)
    text_e = pl.col("text")
    out = out.with_columns(
        reason=pl.when(pl.col("_invalid")).then(pl.lit(f"invalid_utf8: column '{text_col}' is not valid UTF-8"))
        .when(text_e.is_null()).then(pl.lit(f"missing_text: column '{text_col}' is null"))
        .when(text_e.str.strip_chars().str.len_chars() == 0).then(pl.lit(f"empty_text: column '{text_col}' is empty or whitespace"))
        .when(text_e.str.contains("\x00", literal=True)).then(pl.lit(f"nul_byte: column '{text_col}' contains a NUL byte"))
        .otherwise(pl.col("_label_reason"))
    ).drop("_label_reason", "_invalid")
    good = out.filter(pl.col("reason").is_null()).drop("reason").select(CORPUS_COLUMNS)
    rejected = out.filter(pl.col("reason").is_not_null()).select(list(REJECTED_SCHEMA))
    return ReadResult(rows=good.cast(CORPUS_SCHEMA), rejected=rejected.cast(REJECTED_SCHEMA))


def _parse_labels(col: pl.Series, labels: dict[str, int] | None) -> tuple[pl.Series, pl.Series]:
    """Accept integer ids or label names; anything else is flagged (null stays unlabeled)."""
    allowed_ids = set(labels.values()) if labels else None
    if col.dtype.is_integer():  # the fast path for millions of rows
        ids = col.cast(pl.Int64)
        bad = ids.is_not_null() & (~ids.is_in(list(allowed_ids)) if allowed_ids else pl.lit(False))
        bad = pl.select(bad).to_series() if not isinstance(bad, pl.Series) else bad
        return pl.select(pl.when(bad).then(None).otherwise(ids)).to_series(), bad
    values: list[int | None] = []
    bad: list[bool] = []
    for v in col.to_list():
        if v is None or (isinstance(v, str) and not v.strip()):
            values.append(None)
            bad.append(False)
            continue
        parsed: int | None = None
        if isinstance(v, bool):
            parsed = int(v)
        elif isinstance(v, (int,)):
            parsed = v
        elif isinstance(v, float) and v.is_integer():
            parsed = int(v)
        elif isinstance(v, str):
            s = v.strip()
            if labels and s.lower() in {k.lower() for k in labels}:
                parsed = next(i for k, i in labels.items() if k.lower() == s.lower())
            elif s.lstrip("-").isdigit():
                parsed = int(s)
        ok = parsed is not None and (allowed_ids is None or parsed in allowed_ids)
        values.append(parsed if ok else None)
        bad.append(not ok)
    return pl.Series(values, dtype=pl.Int64), pl.Series(bad, dtype=pl.Boolean)
