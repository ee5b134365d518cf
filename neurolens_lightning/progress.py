"""One progress display for every long step: a bar on stderr, on rank 0 only, and only when asked.

Every long loop of NeuroLens (the scan's passes, the ablation's first pass and null rounds, steering, the
cross-concept matrix, ``neurolens eval``) counts its work through :func:`progress_bar` (or :func:`track`)
and says what comes next through :func:`note`. The rules, kept here once for all of them:

* off unless ``enabled``: the CLI turns progress on; library calls and tests print nothing by default;
* to stderr (stdout keeps the command's summary), and under a distributed launch on rank 0 only;
* a bar never stops at a fraction: when its loop ends before the announced total (a round that stops
  early, a total that was an upper bound), :meth:`Bar.close` sets the total to the completed count, so
  the last state printed is always ``n/n``. Only a loop that raises leaves its bar where it stopped;
* closed bars stay on screen (``leave=True``): the console keeps a record of every step and its time.

Example:
    >>> with progress_bar(3, "demo", enabled=False) as bar:
    ...     for _ in range(2):
    ...         bar.update()
    >>> bar.n, bar.total    # closed early: the total is what was done
    (2, 2)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Iterator

__all__ = ["Bar", "note", "progress_bar", "track", "shows_progress"]

#: the bar class behind :class:`Bar` (``tqdm`` when None); tests put a recording double here
BAR_FACTORY: Callable[..., Any] | None = None
#: where :func:`note` writes when no bar class is set (tests put a recording double here)
NOTE_WRITER: Callable[[str], None] | None = None


def _rank() -> int:
    """This process's global rank: the initialised process group's, else the launcher's ``RANK`` (torchrun,
    Lightning's DDP launcher), else 0."""
    try:
        import torch.distributed as dist  # lazy: keeps neurolens --help fast

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # pragma: no cover - torch without distributed
        pass
    for key in ("RANK", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def shows_progress(enabled: bool) -> bool:
    """Whether a display asked for with ``enabled`` is drawn here: asked, and this process is rank 0."""
    return bool(enabled) and _rank() == 0


class Bar:
    """A progress bar that closes at its true count (see the module docstring); a no-op when not shown.

    ``n`` and ``total`` are kept whether or not the bar is drawn.

    Example:
        >>> bar = Bar(10, "null round 2 of at most 4", enabled=False)
        >>> bar.update(4); bar.close(); (bar.n, bar.total)
        (4, 4)
    """

    def __init__(self, total: int, desc: str, enabled: bool = False, unit: str = "batch") -> None:
        self.total, self.n, self.desc, self.closed = int(total), 0, desc, False
        self._bar: Any = None
        if shows_progress(enabled):
            factory = BAR_FACTORY
            if factory is None:
                from tqdm.auto import tqdm as factory  # lazy: keeps neurolens --help fast
            self._bar = factory(total=self.total, desc=desc, unit=unit, leave=True, file=sys.stderr,
                                dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += int(n)
        if self._bar is not None:
            self._bar.update(int(n))

    def set_postfix(self, text: str) -> None:
        """What the bar is on now (e.g. the concept being scored), after the counts."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self, completed: bool = True) -> None:
        """Close the bar. ``completed`` (the loop ended normally): the total becomes the count done, so the bar
        ends full; ``completed=False`` (the loop raised) leaves it where it stopped."""
        if self.closed:
            return
        self.closed = True
        if completed:
            self.total = self.n
        if self._bar is not None:
            if completed and self._bar.total != self._bar.n:
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        # GeneratorExit: the consumer of track() stopped early, a normal end
        self.close(completed=exc_type is None or issubclass(exc_type, GeneratorExit))


def progress_bar(total: int, desc: str, enabled: bool = False, unit: str = "batch") -> Bar:
    """A :class:`Bar` of ``total`` units (a context manager: it closes at its true count on exit).

    Example:
        >>> with progress_bar(2, "steering [1 neuron x 5 scales]", enabled=False) as bar:
        ...     bar.update(2)
    """
    return Bar(total, desc, enabled, unit)


def track(items: Iterable[Any], total: int, desc: str, enabled: bool = False, unit: str = "batch",
          weight: Callable[[Any], int] | None = None) -> Iterator[Any]:
    """Yield ``items`` and count each one (``weight(item)`` units, default 1) on a bar of ``total`` units that
    closes at its true count when the items run out.

    Example:
        >>> list(track(range(3), 3, "demo"))
        [0, 1, 2]
    """
    with progress_bar(total, desc, enabled, unit) as bar:
        for item in items:
            yield item
            bar.update(1 if weight is None else weight(item))


def note(message: str, enabled: bool = False) -> None:
    """One line about what the next steps are (an upper bound announced up front), under the same rules as the
    bars: only when ``enabled``, on stderr, rank 0 only.

    Example:
        >>> note("ablation: up to 4 more null rounds if a p-value is not settled", enabled=False)
    """
    if not shows_progress(enabled):
        return
    if NOTE_WRITER is not None:
        NOTE_WRITER(message)
        return
    from tqdm.auto import tqdm  # lazy: keeps neurolens --help fast

    tqdm.write(message, file=sys.stderr)
