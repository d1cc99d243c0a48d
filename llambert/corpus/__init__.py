"""Reading corpora into the warehouse's shape."""

from llambert.corpus.readers import CORPUS_COLUMNS, ReaderError, ReadResult, read_source

__all__ = ["CORPUS_COLUMNS", "ReaderError", "ReadResult", "read_source"]
