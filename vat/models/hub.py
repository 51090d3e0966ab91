"""Finding the condition encoders' hub weights offline: a local folder, or the local Hugging Face
cache unless the caller allows downloads; a clear VatError naming the command that fetches them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vat.errors import VatError


def local_folder(source: str) -> Path | None:
    """The folder `source` names, None for a hub id; a path-like source that is no folder is an error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith(("/", "./", "../", "~", "\\")) or path.is_file():
        raise VatError(f"{source} is not a folder of model weights")
    return None


def missing_weights(what: str, name: str, repo: str, flag: str) -> VatError:
    via = f" (Hugging Face repo {repo})" if repo != name else ""
    return VatError(
        f"{what} weights {name!r}{via} not found offline: run `hf download {repo}` (huggingface_hub's CLI) on a "
        f"machine with internet and copy its Hugging Face cache (~/.cache/huggingface) here, or pass a local "
        f"folder ({flag} PATH), or allow downloads where the hub is reachable")


def hub_file(repo: str, filenames: Sequence[str], allow_download: bool, missing: VatError) -> str:
    """The first of `filenames` in hub repo `repo`, from the local cache unless downloads are allowed."""
    from huggingface_hub import hf_hub_download

    for filename in filenames:
        try:
            return hf_hub_download(repo, filename, local_files_only=not allow_download)
        except Exception:  # huggingface_hub raises several types for a file that is not there; try the next
            continue
    raise missing
