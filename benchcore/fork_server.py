"""A fork server for measurements that need a process of their own, without paying the imports each time.

``benchcore.metrics.efficiency.run_in_fresh_process`` used to start a new interpreter per call: about 1.4 s to
import torch and 2-4 s more for torchvision, BasicSR or ultralytics on the project's 2-core machine, i.e. most of
a CPU efficiency job (30 methods: 155 s, of which ~1 s each is measurement). The server here is one new
interpreter that imports torch and torchvision (which every measured method imports) and then, per call, forks
a child that runs the call and exits. The child did nothing but those imports before the call, so its peak
memory is still the call's own plus the shared libraries every method loads anyway.

Why not ``multiprocessing``'s forkserver: its children re-import the parent's ``__main__``, and under Snakemake
that is the rule script itself (no ``if __name__ == "__main__"`` guard), so the job would run again inside each
child. This server is started with ``python -c`` and never sees the caller's ``__main__``.

Protocol (text lines on the server's stdin / stdout): the caller writes ``call_path<TAB>result_path<TAB>
threads<TAB>log_path<TAB>cwd``; the server answers ``pid <n>`` when the child is forked and ``exit <code>`` when it
ended (negative: killed by that signal). The child writes its stdout and stderr to ``log_path`` + ``.out`` /
``.err``.
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time

PRELOAD = ("torch", "torchvision")

_SERVER = r"""import os, sys
for name in sys.argv[1:]:
    __import__(name)
print("ready", flush=True)
for line in sys.stdin:
    call, result, threads, log, cwd = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, ext in ((1, ".out"), (2, ".err")):
                os.dup2(os.open(log + ext, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.chdir(cwd)  # the caller's working directory now, not the server's at its start
            import pickle
            with open(call, "rb") as f:
                sys.path[:] = pickle.load(f)  # the caller's import path
            from benchcore.smk import limit_threads
            limit_threads(int(threads))
            from benchcore.metrics.efficiency import _run_pickled_call
            _run_pickled_call(call, result)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(f"pid {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
"""


class ForkServer:
    """One server process (started on first use); :meth:`run` is one call in a forked child."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._buf = b""
            self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, *self.preload], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE)
            self._expect("ready", None)
        return self._proc

    def _expect(self, word: str, timeout: float | None) -> str:
        """The server's next line, which must start with ``word``; ``TimeoutError`` after ``timeout`` s."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                self.close()
                raise RuntimeError(f"fork server: it ended while {word!r} was awaited (exit status "
                                   f"{proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        if not text.startswith(word):
            self.close()
            raise RuntimeError(f"fork server: expected {word!r}, got {text!r}")
        return text[len(word):].strip()

    def run(self, call_path: str, result_path: str, threads: int, log_path: str, timeout: float | None) -> int:
        """Run the pickled call; return the child's exit code (negative: killed by that signal).

        ``timeout``: seconds before the child is killed (``subprocess.TimeoutExpired``).
        """
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None
            proc.stdin.write(f"{call_path}\t{result_path}\t{threads}\t{log_path}\t{os.getcwd()}\n".encode())
            proc.stdin.flush()
            pid = int(self._expect("pid", None))
            try:
                return int(self._expect("exit", timeout))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._expect("exit", None)
                raise subprocess.TimeoutExpired(f"fork server child {pid}", timeout or 0) from None

    def close(self) -> None:
        """Stop the server (its children have all ended: :meth:`run` waits for each)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


SERVER = ForkServer()
atexit.register(SERVER.close)
