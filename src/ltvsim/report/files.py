"""The loan book beside a saved result, so a report can be made from the directory alone.

A :class:`~ltvsim.SimulationResult` holds no per-loan inputs, but segment views need
them. ``ltvsim run --out DIR --report`` therefore writes ``DIR/book.parquet``: every
field of the book (``asset`` as an index into the result's assets), every extra column,
and ``initial_ltv`` at the paths' step-0 prices when the book has no such column.
:func:`load_book` reads it back as a :class:`~ltvsim.LoanBook`.
"""
import os

import numpy as np

BOOK_FILE = "book.parquet"


def save_book(book, directory, prices=None):
    """Write ``book`` to ``directory/book.parquet`` (adding ``initial_ltv`` at ``prices``,
    a sequence by asset index, when the book lacks it). Returns the file's path."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("writing the book needs pyarrow: pip install 'ltvsim[parquet]'") from exc
    columns = {name: np.asarray(values) for name, values in book.to_dict().items()}
    if "initial_ltv" not in columns and prices is not None:
        columns["initial_ltv"] = book.initial_ltv(prices)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, BOOK_FILE)
    tmp = path + ".tmp"
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, path)
    return path


def load_book(directory, asset_names=None):
    """The book saved by :func:`save_book` in ``directory``, or ``None`` when there is none."""
    from ..book import LoanBook

    path = os.path.join(directory, BOOK_FILE)
    if not os.path.exists(path):
        return None
    return LoanBook.from_parquet(path, asset_names=asset_names)
