"""Getting articles into the store: one parser per input kind, one writer."""

from .parsers import SUFFIXES, ParsedFile, parse_path
from .records import ArticleInput
from .retopic import RetopicReport, examples_in_store, learn_from_store, retopic
from .writer import ImportReport, import_files, write_articles

__all__ = [
    "SUFFIXES",
    "ArticleInput",
    "ImportReport",
    "ParsedFile",
    "RetopicReport",
    "import_files",
    "examples_in_store",
    "learn_from_store",
    "parse_path",
    "retopic",
    "write_articles",
]
