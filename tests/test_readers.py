"""Corpus readers on well-formed input of every supported format."""

from __future__ import annotations

import json

import polars as pl

from llambert.config import CorpusSource
from llambert.corpus import read_source

LABELS = {"negative": 0, "positive": 1}


def test_parquet_imdb(imdb_dir):
    r = read_source(CorpusSource(name="imdb", path="test.parquet", split="test"), imdb_dir / "test.parquet", LABELS)
    assert r.rows.height == 25_000 and r.rejected.height == 0
    assert r.rows["gold_label"].value_counts().sort("gold_label")["count"].to_list() == [12_500, 12_500]
    assert set(r.rows["split"].unique()) == {"test"}


def test_csv_with_label_names(tmp_path):
    p = tmp_path / "reviews.csv"
    pl.DataFrame(
        {
            "review": ['Great, "really" great', "Awful.\nJust awful"],
            "sentiment": ["positive", "Negative"],
            "rid": ["a", "b"],
        }
    ).write_csv(p)
    src = CorpusSource(name="mine", path=str(p), text_column="review", label_column="sentiment", id_column="rid")
    r = read_source(src, p, LABELS)
    assert r.rows["text"].to_list() == ['Great, "really" great', "Awful.\nJust awful"]
    assert r.rows["gold_label"].to_list() == [1, 0]
    assert r.rows["source_id"].to_list() == ["a", "b"]
    assert r.rows["split"].to_list() == ["reviews", "reviews"]  # no split given: the file stem


def test_jsonl_with_split_column(tmp_path):
    p = tmp_path / "new.jsonl"
    p.write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {"id": 1, "text": "fine film", "split": "unsup"},
                {"id": 2, "text": "bad film", "label": 0, "split": "train"},
            ]
        )
    )
    r = read_source(CorpusSource(name="n", path=str(p), split=None), p, LABELS)
    assert r.rows.sort("source_row")["split"].to_list() == ["unsup", "train"]
    assert r.rows.sort("source_row")["gold_label"].to_list() == [None, 0]


def test_aclimdb_folder_layout(tmp_path):
    for rel, text in {
        "train/pos/0_9.txt": "Loved it.<br /><br />Again!",
        "train/neg/3_1.txt": "Hated it.",
        "train/unsup/7_0.txt": "Saw it.",
        "test/pos/1_10.txt": "Superb.",
        "test/neg/2_2.txt": "Dull.",
    }.items():
        f = tmp_path / "aclImdb" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    r = read_source(CorpusSource(name="acl", path="aclImdb", format="auto"), tmp_path / "aclImdb", LABELS)
    got = {(row["split"], row["gold_label"], row["text"]) for row in r.rows.to_dicts()}
    assert got == {
        ("train", 1, "Loved it.<br /><br />Again!"),
        ("train", 0, "Hated it."),
        ("unsup", None, "Saw it."),
        ("test", 1, "Superb."),
        ("test", 0, "Dull."),
    }
