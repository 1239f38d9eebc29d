"""Where a trial's adapter lies: a local folder, or a URI of the storage Ray Tune persisted it to.

A search records each trial's adapter where Ray Tune persisted its final checkpoint (the run's
``storage_path``): a local folder (the job's directory on one machine, an NFS mount on a cluster)
or, for a bucket, a pyarrow URI (``s3://bucket/prefix/.../checkpoint_000000``). Whoever reads an
adapter (selection, evaluation, export, the dashboard's artifacts) on whichever machine calls
:func:`local_adapter_dir` first: a folder is used in place, a URI is fetched once into the cache.
Light: pyarrow is imported only to fetch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from promptsweep.exceptions import DataError

#: Written last into a fetched copy: a copy without it is incomplete (a fetch that died) and is redone.
_FETCHED = ".promptsweep_fetched"


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True when ``location`` is a URI (``scheme://...``), not a local path."""
    return "://" in str(location)


def local_adapter_dir(location: str | os.PathLike[str], *, cache_dir: str | Path | None = None) -> Path:
    """A local folder holding the adapter recorded at ``location``.

    Args:
        location: a local folder (returned as it is) or a pyarrow URI (``s3://``, ``gs://``,
            ``file://``, ...), fetched into ``<cache_dir>/adapters/<hash of the URI>`` once.
        cache_dir: cache root (default :func:`promptsweep.paths.cache_dir`).

    Raises:
        DataError: the URI cannot be read (names it and the reason).
    """
    text = str(location)
    if not is_uri(text):
        return Path(text)
    from promptsweep import paths

    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    target = root / "adapters" / hashlib.sha256(text.encode()).hexdigest()[:24]
    if (target / _FETCHED).is_file():
        return target
    import pyarrow.fs

    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        pyarrow.fs.copy_files(text, str(staging))
    except (OSError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"adapter {text!r} cannot be fetched: {exc}") from exc
    (staging / _FETCHED).write_text(text, encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another process fetched it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target
