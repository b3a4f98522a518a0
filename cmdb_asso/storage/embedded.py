"""The embedded MongoDB server: nx-27017 in a child process, one per data directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog

from cmdb_asso.processes import process_alive

log = structlog.get_logger(__name__)

# The MongoDB URI that asks for the embedded server.
EMBEDDED = "embedded"


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Run in the embedded server's process before nx-27017 starts: ask Linux to kill it when its parent dies (a
# SIGKILLed service must not leave its server behind), and exit at once if the parent is already gone. SIGKILL,
# not SIGTERM: nx-27017 meets SIGTERM with asyncio.run's clean exit, which first waits for every command still
# running in its threads; once in CI that took longer than 30 s after a SIGKILL of the service under load. A
# parent that died without stopping its server is a crash anyway, and SQLite recovers from a killed writer.
_LAUNCHER = """
import ctypes, os, signal, sys
parent = os.environ.get("CMDB_ASSO_PARENT_PID")
if parent:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(parent):
        sys.exit(0)
from nx_27017.nx_27017 import main
main()
"""
STATE_FILE = "nx-27017.json"


class EmbeddedStartFailed(RuntimeError):
    """The embedded server could not be started; the message names the cause and what to do."""


PID_FILE = "nx-27017.pid"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class EmbeddedMongo:
    """The nx-27017 wire-protocol server on 127.0.0.1, its SQLite files in a data directory.

    One server per data directory: its pid and port are recorded in `nx-27017.json` there, so that a one-off
    command uses the running server rather than starting a second one on the same files, and a service
    restarted after a crash adopts a server its dead predecessor left (normally none is left: the server is
    asked to die with its parent).
    """

    def __init__(self, data_dir: str | Path, *, start_timeout: float = 20.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.port = 0
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        # A server another live process started and still uses: used here, never stopped from here.
        self._borrowed_pid: int | None = None

    @property
    def uri(self) -> str:
        """The URI to give the driver."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def _state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    def running(self) -> str | None:
        """The URI of a live server already serving this data directory, if there is one."""
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if process_alive(pid) and _listening(port):
            return f"mongodb://127.0.0.1:{port}/?directConnection=true"
        return None

    @property
    def pid(self) -> int | None:
        """The server's process id, once started or adopted."""
        if self._process is not None:
            return self._process.pid
        return self._adopted_pid or self._borrowed_pid

    def alive(self) -> bool:
        """Whether the server this object started (or adopted) is still running."""
        if self._process is not None:
            return self._process.poll() is None
        pid = self._adopted_pid or self._borrowed_pid
        return pid is not None and process_alive(pid)

    async def start(self) -> str:
        """Start the server (or adopt the live one of this data directory) and wait until it answers."""
        adopted = self._adopt()
        if adopted is not None:
            return adopted
        self._spawn(None)
        if await asyncio.to_thread(self._wait_until_listening):
            return self._started()
        await self.stop()
        raise self._did_not_start()

    async def restart(self) -> str:
        """Start the server again on the same port after it died."""
        self.restarts += 1
        self._adopted_pid = self._borrowed_pid = None
        self._process = None
        self._spawn(self.port)
        if await asyncio.to_thread(self._wait_until_listening):
            return self._started()
        raise RuntimeError("the embedded MongoDB server did not restart")

    async def stop(self) -> None:
        """Stop the server."""
        await asyncio.to_thread(self.stop_blocking)

    def start_blocking(self, port: int | None = None) -> str:
        """Start the server (on `port`, or a free one) and wait until it accepts connections."""
        adopted = self._adopt() if port is None else None
        if adopted is not None:
            return adopted
        for _attempt in range(3):
            self._spawn(port)
            if self._wait_until_listening():
                return self._started()
            self.stop_blocking()
        raise self._did_not_start()

    def _did_not_start(self) -> EmbeddedStartFailed:
        log_file = self.data_dir / "nx-27017.log"
        try:
            last = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        except OSError:
            last = []
        said = f" (it said: {last[0][:300]})" if last else ""
        return EmbeddedStartFailed(f"the embedded MongoDB server did not start{said}; see {log_file}")

    def _adopt(self) -> str | None:
        """The live server of this data directory, if any: adopted (stopped with this process) when the process
        that started it is gone, borrowed (left running) while that process still uses it."""
        uri = self.running()
        if uri is None:
            return None
        state = json.loads(self._state_path.read_text(encoding="utf-8"))
        pid, self.port, parent = int(state["pid"]), int(state["port"]), state.get("parent")
        if isinstance(parent, int) and parent != os.getpid() and process_alive(parent):
            self._borrowed_pid = pid
            detail = "another service process uses this data directory's server: used here, never stopped"
            log.warning("embedded_mongodb_shared", pid=pid, port=self.port, started_by=parent, detail=detail)
            return uri
        self._adopted_pid = pid
        log.warning("embedded_mongodb_adopted", pid=pid, port=self.port, data_dir=str(self.data_dir))
        return uri

    def _spawn(self, port: int | None) -> None:
        # PR_SET_PDEATHSIG follows the thread that forks, not the process: asked for only from the main thread
        # (the service's event loop), since a server started from a worker thread would die with that thread.
        store = self.data_dir / "mongo"
        try:
            store.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedStartFailed(
                f"the embedded MongoDB server cannot keep its files in {self.data_dir}: {exc.strerror}; "
                "set data_dir (CMDB_ASSO_DATA_DIR) to a writable directory, or mongodb.uri to a MongoDB server"
            ) from exc
        self._forget_dead_server()
        self.port = port or free_port()
        on_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [
                sys.executable, "-c", _LAUNCHER,
                "--data-dir", str(store), "--host", "127.0.0.1", "--port", str(self.port),
                "--log-file", str(self.data_dir / "nx-27017.log"), "--pid-file", str(self.data_dir / PID_FILE),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "CMDB_ASSO_PARENT_PID": str(os.getpid()) if on_main_thread else ""},
            # A session of its own: a signal to the service's process group (Ctrl-C in a terminal, a process
            # manager's stop) must not stop the server while the service drains; the service stops it after.
            start_new_session=True,
        )  # fmt: skip

    def _forget_dead_server(self) -> None:
        # nx-27017 refuses to start while its pid file names a live or zombie process; a server that died
        # with a killed service may linger as a zombie nobody reaps.
        pid_file = self.data_dir / PID_FILE
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return
        if not process_alive(pid):
            pid_file.unlink(missing_ok=True)

    def _started(self) -> str:
        assert self._process is not None
        state = {"pid": self._process.pid, "port": self.port, "parent": os.getpid()}
        # Written aside and renamed: a reader (another process looking for this directory's server, a restart
        # after the server died) sees the old state or the new one, never an empty file.
        written = self._state_path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        written.write_text(json.dumps(state), encoding="utf-8")
        os.replace(written, self._state_path)
        log.info("embedded_mongodb_started", port=self.port, data_dir=str(self.data_dir / "mongo"))
        return self.uri

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            if _listening(self.port):
                return True
            time.sleep(0.05)
        return False

    def stop_blocking(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after five seconds."""
        process, self._process = self._process, None
        adopted, self._adopted_pid = self._adopted_pid, None
        self._borrowed_pid = None
        if adopted is not None and process_alive(adopted):
            os.kill(adopted, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while process_alive(adopted) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(adopted):
                os.kill(adopted, signal.SIGKILL)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None or adopted is not None:
            self._state_path.unlink(missing_ok=True)
