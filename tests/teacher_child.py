"""A labeling run in its own process, for the kill -9 test: prints a line after every batch.

Usage: python tests/teacher_child.py WAREHOUSE MODEL_DIR N_DOCS BATCH COMMIT_EVERY
It labels N synthetic documents with the tiny teacher through the real runner; each answered
batch is reported on stdout ("answered <count> asked <prompts...>") so the parent knows when to
kill it, and which prompts this process asked for.
"""

from __future__ import annotations

import sys

import polars as pl

from llambert.tasks import load_task
from llambert.teacher.base import DecodingParams
from llambert.teacher.hf_backend import TransformersTeacher
from llambert.teacher.runner import label_documents
from llambert.warehouse import open_warehouse


def docs(n: int) -> pl.DataFrame:
    words = ["wonderful", "awful", "great", "boring", "superb", "dull", "moving", "terrible"]
    return pl.DataFrame(
        {
            "doc_id": [f"d{i:05d}" for i in range(n)],
            "text": [f"review {i}: a {words[i % 8]} and {words[(i * 7) % 8]} film, number {i}" for i in range(n)],
        }
    )


def main() -> None:
    warehouse, model_dir, n, batch, commit_every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    task = load_task("imdb_sentiment")
    decoding = DecodingParams(
        mode="generate", max_new_tokens=4, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=128
    )
    teacher = TransformersTeacher(model_dir, "tiny-teacher@test", task, decoding, threads=1)
    inner = teacher.answer
    total = 0

    def answer(prepared: list[str]):
        nonlocal total
        out = inner(prepared)
        total += len(out)
        print(f"answered {total}", flush=True)
        return out

    teacher.answer = answer
    with open_warehouse(warehouse) as con:
        stats = label_documents(
            con, teacher, docs(n), task.version, batch_size=batch, commit_every=commit_every, show_progress=False
        )
    print(f"done prompts={stats.prompts} cached={stats.cached}", flush=True)


if __name__ == "__main__":
    main()
