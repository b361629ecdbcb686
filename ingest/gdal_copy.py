"""GDAL's ``CreateCopy`` with a progress callback, which rasterio does not expose (``rasterio.shutil.copy``
passes none): writing a Cloud-Optimized GeoTIFF of a large orthophoto takes minutes, and GDAL knows how far
it is.

The call goes to the very GDAL library rasterio has loaded (found among the process's mapped files, so
drivers, configuration options set by ``rasterio.Env`` and error state are the same), through ctypes and
GDAL's stable C API. Where that library cannot be found (not Linux, an unusual build), ``copy_with_progress``
says so and the caller copies with rasterio, without progress.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, ctypes.c_char_p, ctypes.c_void_p)
_GA_READONLY = 0


class GdalCopyError(RuntimeError):
    """GDAL could not open the source or write the copy; the message is GDAL's."""


def copy_with_progress(
    source: Path, target: Path, driver: str, options: Mapping[str, str], on_fraction: Callable[[float], None]
) -> bool:
    """Copy ``source`` to ``target`` with GDAL driver ``driver`` and creation ``options``, calling
    ``on_fraction(done)`` (0 … 1) as GDAL reports. Returns False, having done nothing, when GDAL's C API
    is not reachable; raises GdalCopyError when GDAL fails."""
    gdal = _gdal()
    if gdal is None:
        return False
    handle = gdal.GDALGetDriverByName(driver.encode())
    if not handle:
        raise GdalCopyError(f"GDAL has no {driver} driver")
    texts = [f"{k}={v}".encode() for k, v in options.items()]
    option_list = (ctypes.c_char_p * (len(texts) + 1))(*texts, None)

    def report(done: float, _message: bytes | None, _data: int | None) -> int:
        on_fraction(min(max(float(done), 0.0), 1.0))
        return 1  # go on

    callback = _PROGRESS(report)
    # GDAL's errors become the exception's message, not lines on stderr.
    gdal.CPLPushErrorHandler(ctypes.cast(gdal.CPLQuietErrorHandler, ctypes.c_void_p))
    try:
        gdal.CPLErrorReset()
        src = gdal.GDALOpen(str(source).encode(), _GA_READONLY)
        if not src:
            raise GdalCopyError(_last_error(gdal) or f"cannot open {source}")
        try:
            dst = gdal.GDALCreateCopy(handle, str(target).encode(), src, 0, option_list, callback, None)
            if not dst:
                raise GdalCopyError(_last_error(gdal) or f"cannot write {target}")
            gdal.GDALClose(dst)  # flushes the file: a failure here is a failed write too
            if gdal.CPLGetLastErrorType() >= 3:  # CE_Failure or CE_Fatal while closing
                raise GdalCopyError(_last_error(gdal) or f"cannot write {target}")
        finally:
            gdal.GDALClose(src)
    finally:
        gdal.CPLPopErrorHandler()
    return True


def _last_error(gdal: ctypes.CDLL) -> str:
    message = gdal.CPLGetLastErrorMsg()
    return message.decode("utf-8", "replace").strip() if message else ""


@cache
def _gdal() -> ctypes.CDLL | None:
    """The GDAL library rasterio loaded, with the signatures used here; None if it cannot be found."""
    import rasterio  # noqa: F401  (loads GDAL, so that it is among the mapped files)

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "/libgdal" in line.rsplit(" ", 1)[-1]})
    if len(paths) != 1:
        return None
    try:
        gdal = ctypes.CDLL(paths[0])
    except OSError:
        return None
    gdal.GDALGetDriverByName.restype = ctypes.c_void_p
    gdal.GDALGetDriverByName.argtypes = [ctypes.c_char_p]
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALCreateCopy.restype = ctypes.c_void_p
    gdal.GDALCreateCopy.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_char_p),
        _PROGRESS,
        ctypes.c_void_p,
    ]
    gdal.GDALClose.restype = None
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.CPLErrorReset.restype = None
    gdal.CPLErrorReset.argtypes = []
    gdal.CPLGetLastErrorMsg.restype = ctypes.c_char_p
    gdal.CPLGetLastErrorMsg.argtypes = []
    gdal.CPLGetLastErrorType.restype = ctypes.c_int
    gdal.CPLGetLastErrorType.argtypes = []
    gdal.CPLPushErrorHandler.restype = None
    gdal.CPLPushErrorHandler.argtypes = [ctypes.c_void_p]
    gdal.CPLPopErrorHandler.restype = None
    gdal.CPLPopErrorHandler.argtypes = []
    gdal.GDALAllRegister.restype = None
    gdal.GDALAllRegister.argtypes = []
    gdal.GDALAllRegister()  # rasterio registers the drivers on its first use; this may come before
    return gdal
