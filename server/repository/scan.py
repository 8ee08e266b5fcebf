"""One look at the repositories: every model directory with the fingerprint of its files.

Blocking (reads and hashes files): the manager runs it on a load thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from server.repository.fingerprint import FileHasher, ModelFingerprint
from server.repository.layout import ModelSource, scan_repositories

log = logging.getLogger(__name__)

Scan = dict[str, tuple[ModelSource, ModelFingerprint | None]]


def scan_models(repositories: list[Path], single_model_name: str | None, hasher: FileHasher, names: set[str] | None = None) -> Scan:
    """The models on disk with their fingerprints; only ``names`` when given (hashing every model
    of a large repository to load one of them would read it all). A model whose files change
    while they are read gets no fingerprint: the next look decides.

    Raises ServerError(ALREADY_EXISTS) when two repositories hold the same model name.
    """
    scanned: Scan = {}
    for name, source in scan_repositories(repositories, single_model_name).items():
        if names is not None and name not in names:
            continue
        try:
            scanned[name] = (source, hasher.fingerprint(source))
        except OSError as exc:  # files changing under us: decide on the next poll
            log.warning("model '%s': could not read its files (%s); will look again", name, exc)
            scanned[name] = (source, None)
    return scanned
