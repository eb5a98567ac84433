"""Share a teacher cache as a Hub dataset repository, and open one by its Hub id."""
from __future__ import annotations

import os
from typing import Optional, Union

from huggingface_hub import HfApi, snapshot_download

from ..hub.push import HubPushError, explain_error
from .card import refresh_dataset_card
from .format import CACHE_METADATA_FILE


def resolve_cache(source: str, revision: Optional[str] = None, token: Union[str, bool, None] = None) -> str:
    """A local folder for ``source``: the folder itself, or a download of the Hub dataset ``ORG/NAME``."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return source
    if os.path.exists(source) or source.count("/") != 1:
        raise FileNotFoundError(f"teacher cache {source!r} is neither a folder nor a Hub dataset id (ORG/NAME)")

    folder = snapshot_download(source, repo_type="dataset", revision=revision, token=token)
    if not os.path.isfile(os.path.join(folder, CACHE_METADATA_FILE)):
        raise ValueError(f"the Hub dataset {source} is not an hfkd teacher cache (no {CACHE_METADATA_FILE})")
    return folder


def push_teacher_cache(folder: str, repo_id: str, *, token: Union[str, bool, None] = None,
                       private: Optional[bool] = None, revision: Optional[str] = None,
                       commit_message: Optional[str] = None, endpoint: Optional[str] = None):
    """Upload a cache folder to the Hub dataset ``repo_id`` in one commit, with its card; returns the ``CommitInfo``.

    The card (``README.md``) is re-rendered to name ``repo_id`` when hfkd wrote it.  A failure
    raises :class:`hfkd.hub.HubPushError` (what failed, HTTP status) and leaves the folder intact.
    """
    folder = os.path.abspath(folder)
    if not os.path.isfile(os.path.join(folder, CACHE_METADATA_FILE)):
        raise FileNotFoundError(f"{folder} is not an hfkd teacher cache (no {CACHE_METADATA_FILE})")
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
