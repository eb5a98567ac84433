"""Share a teacher cache as a Hub dataset repository, and open one by its Hub id."""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

from huggingface_hub import CommitOperationAdd, HfApi, constants, snapshot_download
from huggingface_hub.errors import (LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from ..files import relative_files
from ..hub.push import HubPushError, explain_error
from ..settings import shorten
from .card import CARD_FILENAME, refresh_dataset_card
from .format import CACHE_METADATA_FILE, CacheMetadata, TeacherCacheError, check_files

# A push commits at most this many data files and bytes at a time: a large cache goes up in several commits, and a
# push that fails or is killed loses at most one commit's upload; run again, it uploads only what the repository
# lacks.  (The Hub takes up to 25,000 LFS files per commit; commits of a few GB keep each one short.)
COMMIT_MAX_FILES = 100
COMMIT_MAX_BYTES = 5 * 10 ** 9


def split_revision(source: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
    """``ORG/NAME@REV`` -> ``(ORG/NAME, REV)`` (as ``from_pretrained`` reads ``hf-hub:ORG/NAME@REV``)."""
    if "@" not in source or os.path.exists(source):
        return source, revision
    repo_id, _, at = source.partition("@")
    if revision and revision != at:
        raise ValueError(f"teacher cache {shorten(source)} names revision {shorten(at)} but teacher_cache_revision is "
                         f"{shorten(revision)}; give the revision once")
    return repo_id, at or revision


def _download(repo_id: str, revision: Optional[str], token) -> Tuple[str, Optional[List[str]]]:
    """The snapshot folder, and the files this call fetched (``None``: unknown, so all are to be verified)."""
    where = f"the teacher cache {repo_id}" + (f" at revision {shorten(revision)}" if revision else "")
    try:
        try:  # which files are not in the local cache yet: only they are hashed after the download
            plan = snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token, dry_run=True)
            fetched = [f.filename for f in plan if f.will_download]
        except (RevisionNotFoundError, RepositoryNotFoundError):
            raise
        except Exception:  # noqa: BLE001 - the download below says what is wrong
            # Offline nothing can be fetched (the local snapshot is used as it is); otherwise hash everything.
            fetched = [] if constants.HF_HUB_OFFLINE else None
        return snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token), fetched
    except RevisionNotFoundError as e:
        raise TeacherCacheError(f"{where}: the Hub dataset {repo_id} has no revision {shorten(revision)} (a branch, "
                                "tag or commit); check teacher_cache_revision (or the @REVISION after the id)") from e
    except RepositoryNotFoundError as e:
        raise TeacherCacheError(f"{where}: there is no Hub dataset {repo_id} this account can read; check the id, "
                                "or log in (hf auth login / HF_TOKEN) if it is private or gated") from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise TeacherCacheError(f"{where}: cannot download it: the Hub is unreachable (offline?) and it is not in "
                                "the local cache; go online once (HF_HUB_OFFLINE=0) or give a local folder") from e


def resolve_cache(source: str, revision: Optional[str] = None, token: Union[str, bool, None] = None) -> str:
    """A local folder for ``source``: the folder itself, or a download of the Hub dataset ``ORG/NAME[@REV]``.

    Downloaded files are checked against the cache's manifest (size and sha256) right after the download.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        if revision:
            raise ValueError(f"teacher_cache_revision={shorten(revision)} is for a Hub dataset id, but the teacher "
                             f"cache {shorten(source)} is a local folder; drop the revision")
        return source
    repo_id, revision = split_revision(source, revision)
    if os.path.exists(source) or repo_id.count("/") != 1:
        raise FileNotFoundError(f"teacher cache {shorten(source)} is neither a folder nor a Hub dataset id "
                                "(ORG/NAME, optionally ORG/NAME@REVISION)")
    folder, fetched = _download(repo_id, revision, token)
    if not os.path.isfile(os.path.join(folder, CACHE_METADATA_FILE)):
        raise ValueError(f"the Hub dataset {repo_id} is not an hfkd teacher cache (no {CACHE_METADATA_FILE}), or its "
                         f"push has not finished (hfkd commits {CACHE_METADATA_FILE} last): run "
                         "hfkd.push_teacher_cache again to finish it")
    metadata = CacheMetadata.load(folder, source)
    if fetched is None or fetched:  # a cache without a manifest (format 1) is only warned about, as on every open
        check_files(folder, metadata, f"the teacher cache {source} (just downloaded)",
                    content=metadata.files is not None, only=fetched)
    return folder


def _git_blob_sha1(path: str) -> str:
    """The id git (and the Hub) gives a small, non-LFS file's content."""
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _already_pushed(remote, folder: str, rel: str, entry: Dict) -> bool:
    """Whether the repository's file ``remote`` (a ``RepoFile``, or None) holds the manifest's ``entry``."""
    if remote is None or remote.size != entry["size"]:
        return False
    if remote.lfs is not None:  # large files: the Hub knows their sha256, the manifest too (nothing is read)
        return remote.lfs.sha256 == entry["sha256"]
    return remote.blob_id == _git_blob_sha1(os.path.join(folder, rel))


def commit_batches(paths: Sequence[str], sizes: Dict[str, int], max_files: int, max_bytes: int) -> List[List[str]]:
    """``paths`` in order, cut into commits of at most ``max_files`` files and ``max_bytes`` bytes (a larger file
    goes alone)."""
    batches: List[List[str]] = []
    current: List[str] = []
    total = 0
    for rel in paths:
        if current and (len(current) >= max_files or total + sizes[rel] > max_bytes):
            batches.append(current)
            current, total = [], 0
        current.append(rel)
        total += sizes[rel]
    return batches + [current] if current else batches


def push_teacher_cache(folder: str, repo_id: str, *, token: Union[str, bool, None] = None,
                       private: Optional[bool] = None, revision: Optional[str] = None,
                       commit_message: Optional[str] = None, endpoint: Optional[str] = None):
    """Upload a cache folder to the Hub dataset ``repo_id`` with its card; returns the last commit's ``CommitInfo``.

    The data files go up in commits of at most ``COMMIT_MAX_FILES`` files and ``COMMIT_MAX_BYTES`` bytes, skipping
    those the repository already holds with the manifest's size and hash; ``hfkd_cache.json`` and the card go last,
    so a repository whose push stopped midway is not taken for a cache, and the same call finishes it.
    The files are checked against the manifest first (a damaged cache is not published).  The card
    (``README.md``) is re-rendered to name ``repo_id`` when hfkd wrote it.  A failure
    raises :class:`hfkd.hub.HubPushError` (what failed, HTTP status) and leaves the folder intact.
    """
    folder = os.path.abspath(folder)
    if not os.path.isfile(os.path.join(folder, CACHE_METADATA_FILE)):
        raise FileNotFoundError(f"{folder} is not an hfkd teacher cache (no {CACHE_METADATA_FILE})")
    # A damaged cache is not published: every user would train from it (the upload reads the files anyway).
    metadata = CacheMetadata.load(folder)
    check_files(folder, metadata, f"the teacher cache {folder}", content=metadata.files is not None)
    if metadata.files is None:  # format 1: no list of its files; everything but hidden files, as before
        metadata.files = {rel: {"size": os.path.getsize(os.path.join(folder, rel)), "sha256": ""}
                          for rel in relative_files(folder) if rel not in (CACHE_METADATA_FILE, CARD_FILENAME)
                          and not any(part.startswith(".") for part in rel.split("/"))}
    previous = refresh_dataset_card(folder, repo_id)
    api = HfApi(endpoint=endpoint, token=token, library_name="hfkd")
    message = commit_message or "Upload hfkd teacher cache"
    step = f"creating the dataset repository {repo_id}"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision and revision != "main":
            step = f"creating the branch {revision!r} of {repo_id}"
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        step = f"listing the files {repo_id} already holds"
        remote = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=revision,
                                                      recursive=True) if hasattr(f, "blob_id")}
        missing = [rel for rel in sorted(metadata.files)
                   if not _already_pushed(remote.get(rel), folder, rel, metadata.files[rel])]
        sizes = {rel: int(entry["size"]) for rel, entry in metadata.files.items()}
        batches = commit_batches(missing, sizes, COMMIT_MAX_FILES, COMMIT_MAX_BYTES)
        for number, batch in enumerate(batches, 1):
            step = (f"uploading data files {number} of {len(batches)} commits ({len(batch)} files, from "
                    f"{batch[0]}) to {repo_id}")
            api.create_commit(repo_id, [CommitOperationAdd(rel, os.path.join(folder, rel)) for rel in batch],
                              commit_message=f"{message}: data, part {number} of {len(batches)}", repo_type="dataset",
                              revision=revision)
        step = f"uploading {CACHE_METADATA_FILE} and the card to {repo_id}"
        last = [name for name in (CACHE_METADATA_FILE, CARD_FILENAME) if os.path.isfile(os.path.join(folder, name))]
        return api.create_commit(repo_id, [CommitOperationAdd(name, os.path.join(folder, name)) for name in last],
                                 commit_message=message, repo_type="dataset", revision=revision)
    except Exception as error:  # noqa: BLE001 - every failure gets the same actionable message
        if previous is not None:
            with open(os.path.join(folder, "README.md"), "wb") as f:
                f.write(previous)
        explained, status = explain_error(error, api.endpoint, step)
        raise HubPushError(f"pushing the teacher cache failed while {explained}. The folder {folder} is intact; "
                           f"retry with hfkd.push_teacher_cache({folder!r}, {repo_id!r}): it uploads only what "
                           f"{repo_id} lacks", status) from error
