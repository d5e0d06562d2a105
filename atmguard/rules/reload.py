"""Rule pack loading and hot reload: the one mechanism the engine and the gateway's advisor share.

    pack = load_pack(rules_dir)                      # RuleSet, None (no rule files) or RuleSetError
    watcher = RulePackWatcher(rules_dir, install, digest=pack.digest if pack else None)
    await watcher.start() ... await watcher.stop()   # or run `watcher.run()` as a task of its own

On every change in the folder (watchfiles, debounced) the pack is loaded and checked again. A
valid pack whose digest differs from the running one goes to `install`; a pack that fails to
load, or that `install` refuses by raising, is logged line by line (file:line:col) and counted,
and the running rules stay. An edit that leaves the digest as it is (a comment, a touch) is
no reload at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from watchfiles import awatch
from watchfiles.main import FileChange

from atmguard.core.errors import RuleSetError
from atmguard.rules.ruleset import RuleSet, load_rules

log = logging.getLogger(__name__)

#: What `install` gets: a valid pack, or None when no rule file is left (nothing should fire).
Install = Callable[[RuleSet | None], None]


def load_pack(rules_dir: Path) -> RuleSet | None:
    """The rule pack in `rules_dir` (RuleSetError if invalid), or None when it holds no rule files."""
    if not rules_dir.exists():
        return None  # load_rules would report the missing folder as an error
    pack = load_rules([rules_dir])  # one scan of the folder: `files` are the rule files it found
    return pack if pack.files else None


def error_lines(exc: Exception) -> list[str]:
    """One line per problem: `file:line:col: message` for rule errors, the text otherwise."""
    if isinstance(exc, RuleSetError) and exc.errors:
        return [str(e) for e in exc.errors]
    return [str(exc) or repr(exc)]


class RulePackWatcher:
    """Watches a rule folder and hands each valid, changed pack to `install`.

    `install(pack)` applies the pack (swap it into a running engine, say); raising (a RuleError
    from compiling, for instance) refuses it like a load error. `on_reload` and `on_failure` are
    called once per applied and per refused change, so the caller counts them in its own metrics.
    `logger` is the caller's, so the lines say which part kept its rules.
    """

    def __init__(
        self,
        rules_dir: Path,
        install: Install,
        *,
        digest: str | None = None,
        debounce_ms: int = 300,
        on_reload: Callable[[], object] | None = None,
        on_failure: Callable[[], object] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.rules_dir = Path(rules_dir)
        self.install = install
        self.digest = digest  # of the pack running now; None while no pack runs
        self.debounce_ms = debounce_ms
        self.on_reload = on_reload
        self.on_failure = on_failure
        self.log = logger
        self.ready = asyncio.Event()  # set once changes are being watched
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def first_load(self, refused: str = "invalid rules, nothing fires until they are fixed") -> RuleSet | None:
        """The pack at start-up, or None (no rule files; or invalid: each error logged after `refused`)."""
        try:
            pack = load_pack(self.rules_dir)
        except Exception as exc:  # noqa: BLE001 - a broken rule file must not stop the part that loads it
            self._failed(refused, exc)
            pack = None
        self.digest = pack.digest if pack is not None else None
        return pack

    def reload(self) -> bool:
        """Load and check the folder now; install the pack if it changed. False when refused."""
        try:
            pack = load_pack(self.rules_dir)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is refused like an invalid one
            self._failed("rule reload failed, old rules keep running", exc)
            return False
        digest = pack.digest if pack is not None else None
        if digest == self.digest:
            return True  # same rules (or still none): nothing to swap
        try:
            self.install(pack)
        except Exception as exc:  # noqa: BLE001 - whatever `install` raises, the old rules keep running
            self._failed("rule reload failed, old rules keep running", exc)
            return False
        self.digest = digest
        if self.on_reload is not None:
            self.on_reload()
        if pack is None:
            self.log.warning("no rule files left in %s: nothing fires until rules are there", self.rules_dir)
        else:
            self.log.info("rules reloaded: %d rules, digest %s", len(pack.rules), pack.digest)
        return True

    async def run(self) -> None:
        """Reload on every change of the folder until `stop()` (or cancellation)."""
        if not self.rules_dir.exists():
            self.rules_dir.mkdir(parents=True, exist_ok=True)  # watchfiles cannot watch a missing folder
        self._stop = asyncio.Event()
        changes = awatch(self.rules_dir, debounce=self.debounce_ms, step=50, recursive=True, stop_event=self._stop)
        self.log.info("watching %s for rule changes", self.rules_dir)
        try:
            await self._follow(changes)
        finally:
            self.ready.clear()
            await changes.aclose()

    async def _follow(self, changes: AsyncGenerator[set[FileChange], None]) -> None:
        pending = asyncio.ensure_future(anext(changes))
        try:
            # awatch sets up the OS watch in its first step, before it first waits: once that step
            # has run, any later edit is seen. One load now covers the edits made before it.
            await asyncio.sleep(0)
            self.reload()
            self.ready.set()
            while True:
                try:
                    await pending
                except StopAsyncIteration:
                    return
                self.reload()
                pending = asyncio.ensure_future(anext(changes))
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending

    async def start(self) -> None:
        """Run the watcher as a task of the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"rule watcher {self.rules_dir}")

    async def stop(self) -> None:
        """Stop watching and wait for the task to end."""
        task, self._task = self._task, None
        self._stop.set()
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _failed(self, what: str, exc: Exception) -> None:
        if self.on_failure is not None:
            self.on_failure()
        for line in error_lines(exc):
            self.log.error("%s: %s", what, line)
