"""The local socket between the kernel and its worker processes: JSON lines and a token.

Why a socket of our own next to torch.distributed: the collective backend carries the
math between workers; the kernel is not a member of the process group (it must stay free
to draw the display, take the stop button and kill a stalled worker). Every worker opens
one connection to the kernel on 127.0.0.1, says who it is with a random per-launch token
(so nothing else on the machine can feed the run), then streams small JSON messages; the
kernel sends one kind back, ``{"t": "stop"}``.

Worker → kernel messages (``t``):

``hello``   rank, pid, world — the first line, with ``token``
``phase``   rank, phase (loading the model, attaching the adapter, …) — proof of life before training
``event``   rank, kind, data, run — an ``events.emit`` of the worker's own callbacks, plus the
            run record's changes since the last message (new losses, seconds, tokens)
``done``    rank, status, message, peak, memory_kind, checkpoint, adapter — the run ended
``failed``  rank, status ("oom" | "error"), message — an exception in training

A worker whose connection to the kernel drops (the kernel died or was restarted) exits at
once: nothing outlives the kernel.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

MAX_LINE = 1 << 24  # a message is never this long; a peer that sends more is cut off


def _dumps(msg: dict[str, Any]) -> bytes:
    return (json.dumps(msg, default=str, separators=(",", ":")) + "\n").encode()


def new_token() -> str:
    return secrets.token_hex(16)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.rank: int | None = None


class Listener:
    """The kernel's end: accepts the workers' connections and reads their messages."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self._conns: list[_Conn] = []

    def poll(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Messages that arrived within ``timeout`` seconds, as (rank, message).

        A connection that closes yields ``(rank, {"t": "closed"})`` once; one that never
        said hello with the right token is dropped silently.
        """
        socks = [self.server] + [c.sock for c in self._conns]
        try:
            ready, _, _ = select.select(socks, [], [], timeout)
        except InterruptedError:
            return []
        out: list[tuple[int, dict[str, Any]]] = []
        for s in ready:
            if s is self.server:
                try:
                    sock, _ = self.server.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                self._conns.append(_Conn(sock))
                continue
            conn = next(c for c in self._conns if c.sock is s)
            try:
                data = s.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data or len(conn.buf) > MAX_LINE:
                self._drop(conn, out)
                continue
            conn.buf += data
            while b"\n" in conn.buf:
                line, conn.buf = conn.buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if conn.rank is None:
                    if msg.get("t") != "hello" or msg.get("token") != self.token:
                        self._drop(conn, out)
                        break
                    conn.rank = int(msg["rank"])
                out.append((conn.rank, msg))
        return out

    def _drop(self, conn: _Conn, out: list[tuple[int, dict[str, Any]]]) -> None:
        self._conns.remove(conn)
        conn.sock.close()
        if conn.rank is not None:
            out.append((conn.rank, {"t": "closed"}))

    def broadcast(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` to every connected worker (best effort: a dead one is simply gone)."""
        data = _dumps(msg)
        for c in list(self._conns):
            if c.rank is None:
                continue
            try:
                c.sock.setblocking(True)
                c.sock.settimeout(2.0)
                c.sock.sendall(data)
            except OSError:
                pass
            finally:
                c.sock.setblocking(False)

    def close(self) -> None:
        for c in self._conns:
            c.sock.close()
        self._conns.clear()
        self.server.close()


class Client:
    """A worker's end: one connection to the kernel, a reader thread for ``stop``."""

    def __init__(self, port: int, token: str, rank: int, on_stop: Callable[[], None]) -> None:
        self.rank = rank
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self._on_stop = on_stop
        self.closing = False
        self.send({"t": "hello", "token": token, "pid": os.getpid(),
                   "world": int(os.environ.get("WORLD_SIZE", "1"))})
        threading.Thread(target=self._read, name="peft-magic-kernel-link", daemon=True).start()

    def send(self, msg: dict[str, Any]) -> None:
        msg.setdefault("rank", self.rank)
        data = _dumps(msg)
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self._lost()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                r, _, _ = select.select([self.sock], [], [], 1.0)
                if not r:
                    continue
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("t") == "stop":
                    self._on_stop()

    def _lost(self) -> None:
        """The kernel is gone (died, restarted, or killed the run): leave now, whatever the state."""
        if not self.closing:
            os._exit(3)

    def close(self) -> None:
        self.closing = True
        try:
            self.sock.close()
        except OSError:
            pass
