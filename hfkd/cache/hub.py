"""Share a teacher cache as a Hub dataset repository, and open one by its Hub id."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from ..hub.push import HubPushError, explain_error
from ..settings import shorten
from .card import refresh_dataset_card
from .format import CACHE_METADATA_FILE, CacheMetadata, TeacherCacheError, check_files


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
        raise ValueError(f"the Hub dataset {repo_id} is not an hfkd teacher cache (no {CACHE_METADATA_FILE})")
    metadata = CacheMetadata.load(folder, source)
    if fetched is None or fetched:  # a cache without a manifest (format 1) is only warned about, as on every open
        check_files(folder, metadata, f"the teacher cache {source} (just downloaded)",
                    content=metadata.files is not None, only=fetched)
    return folder


def push_teacher_cache(folder: str, repo_id: str, *, token: Union[str, bool, None] = None,
                       private: Optional[bool] = None, revision: Optional[str] = None,
                       commit_message: Optional[str] = None, endpoint: Optional[str] = None):
    """Upload a cache folder to the Hub dataset ``repo_id`` in one commit, with its card; returns the ``CommitInfo``.

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
    previous = refresh_dataset_card(folder, repo_id)
    api = HfApi(endpoint=endpoint, token=token, library_name="hfkd")
    step = f"creating the dataset repository {repo_id}"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision and revision != "main":
            step = f"creating the branch {revision!r} of {repo_id}"
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        step = f"uploading {folder} to {repo_id}"
        return api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset", revision=revision,
                                 commit_message=commit_message or "Upload hfkd teacher cache",
                                 ignore_patterns=[".*", "**/.*"])
    except Exception as error:  # noqa: BLE001 - every failure gets the same actionable message
        if previous is not None:
            with open(os.path.join(folder, "README.md"), "wb") as f:
                f.write(previous)
        message, status = explain_error(error, api.endpoint, step)
        raise HubPushError(f"pushing the teacher cache failed while {message}. The folder {folder} is intact; "
                           f"retry with hfkd.push_teacher_cache({folder!r}, {repo_id!r})", status) from error
