"""Triton's system shared-memory extension: the registry of regions clients have registered.

A region is ``byte_size`` bytes, from ``offset``, of a POSIX shared-memory object: a regular
file directly in /dev/shm, named by its key ("/name", no other "/"). Nothing else can be named:
no path, no symlink (opened with O_NOFOLLOW), no device or FIFO. Registration checks that the
region lies inside the object, maps it once (read and write: outputs are written into it) and
hands out bounds-checked views of it; every offset and size a request names is checked against
the region before any byte is touched.

Unregistering removes the name at once, but never unmaps memory a request still uses: a view
handed out keeps the mapping alive (Python's buffer protocol refuses to close a mapping with
live views), so a queued request that reads or writes an unregistered region finishes safely and
the mapping goes when its last view does. Regions and mapped bytes, counting mappings still in
use after an unregister, are bounded (--max-shm-regions, --max-shm-bytes).

What no check can prevent: the client owning the object can shrink it (ftruncate) while it is
registered, and touching a mapping beyond the end of its file raises SIGBUS. The size is checked
again each time a request uses the region, which narrows that window to the request's own run;
this is one reason the extension is off unless --allow-client-shm is given (README).

All methods run on the event loop.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
import stat
import weakref
from dataclasses import dataclass, field

from server.client_strings import check_client_string, shown
from server.errors import ErrorCode, ServerError
from server.types import SharedMemoryRegion

SHM_DIRECTORY = "/dev/shm"
# A POSIX shared-memory name: one optional leading "/", then a file name (NAME_MAX bytes at most).
_KEY = re.compile(r"/?(?P<name>[^/\x00]{1,255})")
DISABLED_MESSAGE = "system shared memory is disabled on this server: start ortserve with --allow-client-shm=true to use it"


@dataclass(frozen=True, slots=True)
class SharedMemoryLimits:
    enabled: bool = False
    max_regions: int = 128
    max_bytes: int = 2**40


@dataclass(slots=True, eq=False)
class _Region:
    status: SharedMemoryRegion
    fd: int
    mapping: mmap.mmap
    # The region's bytes within the mapping (which starts at a page boundary).
    view: memoryview
    end: int = field(init=False)

    def __post_init__(self) -> None:
        self.end = self.status.offset + self.status.byte_size


class SharedMemoryRegistry:
    def __init__(self, limits: SharedMemoryLimits | None = None) -> None:
        self.limits = limits or SharedMemoryLimits()
        self._regions: dict[str, _Region] = {}
        # Unregistered mappings still in use by a request: token → bytes, until the mapping goes.
        self._lingering: dict[int, int] = {}
        self._tokens = itertools.count()

    @property
    def enabled(self) -> bool:
        return self.limits.enabled

    @property
    def region_count(self) -> int:
        return len(self._regions)

    @property
    def mapped_bytes(self) -> int:
        return sum(region.status.byte_size for region in self._regions.values()) + sum(list(self._lingering.values()))

    # ---- the extension's three calls ---------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes of the object ``key`` from ``offset`` under ``name``.

        Raises ServerError with Triton's codes: ALREADY_EXISTS for a name in use, INTERNAL
        "Unable to open shared memory region" for a key that is not an openable POSIX
        shared-memory object, INVALID_ARG for a region outside the object; UNAVAILABLE past the
        limits; UNSUPPORTED when the extension is off.
        """
        self._require_enabled()
        if not name:
            raise ServerError.invalid_arg("'region name' is necessary to register system shared memory region")
        check_client_string("shared memory region name", name)
        check_client_string("shared memory key", key)
        if name in self._regions:
            raise ServerError(ErrorCode.ALREADY_EXISTS, f"shared memory region '{name}' already in manager")
        if len(self._regions) >= self.limits.max_regions:
            raise ServerError.unavailable(
                f"failed to register shared memory region '{name}': the server holds its limit of "
                f"{self.limits.max_regions} regions (--max-shm-regions); unregister one first"
            )
        if offset < 0 or byte_size <= 0:
            raise ServerError.invalid_arg(f"failed to register shared memory region '{name}': invalid args")
        if self.mapped_bytes + byte_size > self.limits.max_bytes:
            raise ServerError.unavailable(
                f"failed to register shared memory region '{name}': {byte_size} more bytes would pass the "
                f"limit of {self.limits.max_bytes} mapped bytes (--max-shm-bytes)"
            )
        fd = _open_object(key)
        try:
            region = _map(name, key, fd, offset, byte_size)
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = region

    def status(self, name: str) -> list[SharedMemoryRegion]:
        """Every region ("" name), or the one named. Raises NOT_FOUND for an unknown name."""
        self._require_enabled()
        if not name:
            return [region.status for region in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise ServerError.not_found(f"Unable to find system shared memory region: {shown(name)}")
        return [region.status]

    def unregister(self, name: str) -> None:
        """Forget one region, or every region for "" (an unknown name is no error, as in Triton)."""
        self._require_enabled()
        names = list(self._regions) if not name else [name] if name in self._regions else []
        for each in names:
            self._release(self._regions.pop(each))

    def close(self) -> None:
        """Unregister everything (shutdown)."""
        for region in list(self._regions.values()):
            self._release(region)
        self._regions.clear()

    # ---- what requests use -----------------------------------------------------------------

    def view(self, name: str, offset: int, byte_size: int) -> memoryview:
        """``byte_size`` bytes of region ``name`` from ``offset`` (relative to the region), after
        checking them against the region and the object's current size. The view keeps the
        mapping alive until it is dropped.

        Raises NOT_FOUND for an unknown region, INVALID_ARG (Triton's words) for an offset or a
        size outside it, UNSUPPORTED when the extension is off.
        """
        self._require_enabled()
        region = self._regions.get(name)
        if region is None:
            raise ServerError.not_found(f"Unable to find shared memory region: {shown(name)}")
        size = region.status.byte_size
        if offset < 0 or offset >= size:
            raise ServerError.invalid_arg(f"Invalid offset for shared memory region: {shown(name)}")
        if byte_size < 0 or offset + byte_size > size:
            raise ServerError.invalid_arg(f"Invalid offset + byte size for shared memory region: {shown(name)}")
        if os.fstat(region.fd).st_size < region.end:
            raise ServerError.invalid_arg(
                f"shared memory region '{name}' no longer fits its object '{region.status.key}': the object was "
                "made smaller after the region was registered"
            )
        return region.view[offset : offset + byte_size]

    # ---- internals ---------------------------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self.limits.enabled:
            raise ServerError.unsupported(DISABLED_MESSAGE)

    def _release(self, region: _Region) -> None:
        """Close what no request uses; a mapping with live views goes when its last view does."""
        os.close(region.fd)
        region.view.release()
        try:
            region.mapping.close()
        except BufferError:  # views handed to requests are alive: they keep the mapping
            token = next(self._tokens)
            self._lingering[token] = region.status.byte_size
            weakref.finalize(region.mapping, self._lingering.pop, token, None)


def _open_object(key: str) -> int:
    """An fd of the POSIX shared-memory object ``key`` (a regular file directly in /dev/shm)."""
    unable = f"Unable to open shared memory region: '{key}'"
    match = _KEY.fullmatch(key)
    if match is None or match["name"] in (".", ".."):
        raise ServerError.internal(f"{unable} (a key names a POSIX shared-memory object: '/name', without any other '/')")
    try:
        fd = os.open(os.path.join(SHM_DIRECTORY, match["name"]), os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ServerError.internal(f"{unable} ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ServerError.internal(f"{unable} (not a shared-memory object)")
    return fd


def _map(name: str, key: str, fd: int, offset: int, byte_size: int) -> _Region:
    """Map the region, from the page boundary at or below ``offset``."""
    if offset + byte_size > os.fstat(fd).st_size:
        # Mapping past the end of the object would succeed, and touching it would raise SIGBUS.
        raise ServerError.invalid_arg(f"failed to register shared memory region '{name}': invalid args")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, offset - start + byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    except (OSError, ValueError, OverflowError) as exc:
        raise ServerError.invalid_arg(f"failed to register shared memory region '{name}': unable to process address space: {exc}") from None
    view = memoryview(mapping)[offset - start :]
    return _Region(SharedMemoryRegion(name, key, offset, byte_size), fd, mapping, view)
