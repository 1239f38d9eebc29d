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
import tempfile
from pathlib import Path

from promptsweep.exceptions import DataError

#: Suffix of the file written beside a fetched copy once it is complete (without it: fetched again).
_FETCHED = ".fetched"


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
    done = target.with_name(target.name + _FETCHED)  # beside the copy, so that exports do not carry it
    if done.is_file() and target.is_dir():
        return target
    import pyarrow.fs

    target.parent.mkdir(parents=True, exist_ok=True)
    # A staging folder of its own for each fetch (threads of one server, hosts sharing the cache).
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        pyarrow.fs.copy_files(text, str(staging))
    except (OSError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"adapter {text!r} cannot be fetched: {exc}") from exc
    if done.is_file() and target.is_dir():  # another reader finished first: keep its copy (in use)
        shutil.rmtree(staging, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy left by a fetch that died
    try:
        staging.rename(target)
    except OSError:  # another reader renamed its copy there meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    done.write_text(text, encoding="utf-8")
    return target
