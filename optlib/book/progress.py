"""Progress bars for the book's loops: a ``tqdm`` bar that is silent where it would be noise.

Silent under pytest and nbval (nbval compares stderr, where the bar goes), when the
environment has ``OPTLIB_PROGRESS=0``, or when ``enabled=False``; ``scripts/run_notebook.py``
runs chapters with ``OPTLIB_PROGRESS=0`` so stored notebooks hold no bars. The rules live
in the core (``optlib._progress``) because ``optlib.lr_range_test`` shows a bar too.
"""

from optlib._progress import progress, progress_enabled

__all__ = ["progress", "progress_enabled"]
