"""The risk report: ``write_report(result, directory, book=...)`` writes a self-contained
HTML page (``report.html``), its PNG figures and ``risk.json``; ``report_directory``
does the same for a result saved by ``ltvsim run --out`` (reading ``book.parquet``
beside it when present). Needs matplotlib: ``pip install "ltvsim[report]"``.
"""
import os

from .files import BOOK_FILE, load_book, save_book
from .html import FIGURES, JSON_FILE, REPORT_FILE, compute, write_report


def report_directory(result_dir, out=None, **options):
    """Load the result saved in ``result_dir`` (and its ``book.parquet``, if any) and
    write the report into ``out`` (default ``result_dir/report``).

    ``options`` go to :func:`write_report`. Returns its dict of written files.
    """
    from ..result import SimulationResult

    result = SimulationResult.load(result_dir)
    book = options.pop("book", None)
    if book is None:
        book = load_book(result_dir, asset_names=result.assets)
    note = None
    if book is None:
        note = (f"No {BOOK_FILE} in {result_dir}: segment views need the book "
                "(ltvsim run --out DIR --report writes it).")
    return write_report(result, out or os.path.join(result_dir, "report"), book=book, book_note=note, **options)


__all__ = ["BOOK_FILE", "FIGURES", "JSON_FILE", "REPORT_FILE", "compute", "load_book", "report_directory",
           "save_book", "write_report"]
