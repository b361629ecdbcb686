"""Reading ahead in a forked process: the next chunk of a file is read (and checked: ``read_vector_chunks``'
``then``) while this process loads the one before, on the other core. pyogrio and the checks in pandas
hold Python's lock, so a thread would not do. What crosses the pipe should be cheap to pickle: checked
stage frames of text, numbers and EWKB bytes are; shapely geometries are not (written out as WKB and
parsed again, which costs more than reading them).

The reader is a fork of this process: it has the file's name and everything it needs in its copy of the
memory, touches nothing it inherited but the pipe (no database connection, no output) and leaves with
``os._exit``. Where processes cannot be forked, the items are produced here, as they are asked for.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class ReaderDied(RuntimeError):
    """The reading process ended without a word (killed, or crashed in a C library)."""


def read_ahead(produce: Callable[[], Iterator[T]]) -> Iterator[T]:
    """The items of ``produce()``, in order, produced by a forked process one item ahead of the consumer;
    an exception ``produce`` raises is raised here, after the items before it. Closing the iterator early
    ends the reader."""
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from produce()
        return
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    reader = context.Process(target=_produce, args=(produce, sender), daemon=True)
    reader.start()
    sender.close()
    try:
        while True:
            try:
                message: tuple[str, Any] = receiver.recv()
            except EOFError:
                reader.join()
                raise ReaderDied(f"the process reading ahead ended with exit code {reader.exitcode}") from None
            kind, payload = message
            if kind == "item":
                yield payload
            elif kind == "error":
                raise payload
            else:
                return
    finally:
        if reader.is_alive():
            reader.kill()
        reader.join()
        receiver.close()


def _produce(produce: Callable[[], Iterator[Any]], sender: Any) -> None:
    gc.disable()  # nothing inherited may be finalised here (the parent's connections and files)
    try:
        for item in produce():
            sender.send(("item", item))
        sender.send(("end", None))
    except BaseException as exc:
        try:
            sender.send(("error", exc))
        except Exception:  # an exception that does not pickle: its text will do
            sender.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        sender.close()
        os._exit(0)
