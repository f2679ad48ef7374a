"""The board's launches: ``ragtune run`` / ``ragtune tune`` as child processes, one at a time by default and
queued beyond that, and the tools on a finished run (``serve``, ``export``, ``explain``), started at once; each
with its log in ``RUNS/.board/<job>.log``.

A job is started as ``python -m ragtune run CONFIG --out OUT --quiet`` (``tune`` alike; ``--resume OUT`` to
continue a killed run): the same command a terminal runs, so the run directory, its lock and its checkpoints
are the command line's. :meth:`Jobs.stop` sends SIGINT, which a run answers as Ctrl-C: it stops, keeps its
last checkpoint (each epoch, or every ``train.checkpoint_every_steps``) and exits 130, so it can be resumed.
A child that crashes is a job with its exit code and log; the board itself never depends on a child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.errors import RagtuneError

COMMANDS = ("run", "tune")  # from a config; queued behind max_parallel
TOOLS = ("serve", "export", "explain")  # on a finished run; started at once (a server would hold a slot forever)
MAX_TOOLS = 4  # tool processes running at once (each loads a model): a fifth waits for one to end


@dataclass
class Job:
    id: str
    command: str  # run | tune
    config: str
    out: str
    resume: bool
    log: str
    state: str = "queued"  # queued | running | finished | failed | stopped
    returncode: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    args: list[str] = field(default_factory=list)  # a tool's arguments after ``ragtune COMMAND``
    port: int | None = None  # serve: where it listens
    result: str | None = None  # explain: the HTML file it writes
    env: dict = field(default_factory=dict, repr=False)  # added to the child's environment (serve's API key)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def public(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "command", "config", "out", "resume", "state", "returncode",
                                              "created", "started", "ended", "port")}


def _default_sigint() -> None:
    """In the child before it starts: SIGINT as a terminal's Ctrl-C (a board started in the background, with
    SIGINT ignored, would pass that on, and Stop would do nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Jobs:
    """The queue of launched jobs (thread-safe; a background thread starts queued jobs and reaps ended ones)."""

    def __init__(self, runs_root: Path, max_parallel: int = 1, python: str = sys.executable) -> None:
        if max_parallel < 1:
            raise RagtuneError(f"board: max_parallel must be at least 1 (got {max_parallel})")
        self.root, self.max_parallel, self.python = Path(runs_root), max_parallel, python
        self.logs = self.root / ".board"
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ragtune-board-jobs", daemon=True)
        self._thread.start()

    def submit(self, command: str, config: Path, out: Path, resume: bool = False) -> Job:
        if command not in COMMANDS:
            raise RagtuneError(f"board: unknown command {command!r}; choose one of {list(COMMANDS)}")
        self._reap()  # a child that has just exited no longer holds its folder
        with self.lock:
            busy = [j for j in self.jobs.values() if j.state in ("queued", "running") and j.out == str(out)]
            if busy:
                raise RagtuneError(f"{out}: job {busy[0].id} already writes this folder")
            self.logs.mkdir(parents=True, exist_ok=True)
            job_id = uuid.uuid4().hex[:10]
            job = Job(job_id, command, str(config), str(out), resume, str(self.logs / f"{job_id}.log"))
            self.jobs[job_id] = job
        self._tick()
        return job

    def start_tool(self, command: str, args: list[str], out: Path, port: int | None = None,
                   result: Path | None = None, env: dict | None = None) -> Job:
        """Start ``ragtune COMMAND ARGS...`` now, outside the queue (``out``: the folder it works on)."""
        if command not in TOOLS:
            raise RagtuneError(f"board: unknown tool {command!r}; choose one of {list(TOOLS)}")
        self._reap()
        with self.lock:
            busy = [j for j in self.jobs.values() if j.command in TOOLS and j.state == "running"]
            if len(busy) >= MAX_TOOLS:
                raise RagtuneError(f"board: {len(busy)} tools are running ({', '.join(j.command for j in busy)}); "
                                   "stop one (a server in the jobs list) or wait for one to end")
            self.logs.mkdir(parents=True, exist_ok=True)
            job_id = uuid.uuid4().hex[:10]
            job = Job(job_id, command, "", str(out), False, str(self.logs / f"{job_id}.log"), args=[str(a) for a in args],
                      port=port, result=str(result) if result else None, env=dict(env or {}))
            self.jobs[job_id] = job
            self._start(job)
        return job

    def running(self, command: str, out: Path) -> Job | None:
        """A queued or running ``command`` job on ``out``, if there is one."""
        self._reap()
        with self.lock:
            return next((j for j in self.jobs.values() if j.command == command and j.out == str(out)
                         and j.state in ("queued", "running")), None)

    def stop(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state == "queued":
                job.state, job.ended = "stopped", time.time()
            elif job.state == "running" and job.process is not None:
                job.process.send_signal(signal.SIGINT)  # Ctrl-C: the run keeps its last checkpoint
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            if job_id not in self.jobs:
                raise KeyError(job_id)
            return self.jobs[job_id]

    def listing(self) -> list[dict]:
        with self.lock:
            return [j.public() for j in sorted(self.jobs.values(), key=lambda j: -j.created)]

    def close(self, timeout: float = 30.0) -> None:
        """Stop every running child (SIGINT, then SIGKILL after ``timeout``) and the background thread."""
        self._stop.set()
        with self.lock:
            running = [j for j in self.jobs.values() if j.state == "running" and j.process is not None]
        for job in running:
            job.process.send_signal(signal.SIGINT)
        deadline = time.time() + timeout
        for job in running:
            try:
                job.process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.process.kill()
        self._reap()
        self._thread.join(timeout=5)

    # the background thread
    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._tick()

    def _tick(self) -> None:
        self._reap()
        with self.lock:
            running = sum(j.state == "running" and j.command in COMMANDS for j in self.jobs.values())
            waiting = sorted((j for j in self.jobs.values() if j.state == "queued"), key=lambda j: j.created)
            for job in waiting[:max(0, self.max_parallel - running)]:
                self._start(job)

    def _start(self, job: Job) -> None:
        if job.command in COMMANDS:
            cmd = [self.python, "-m", "ragtune", job.command, job.config, "--quiet"]
            cmd += ["--resume", job.out] if job.resume else ["--out", job.out]
        else:
            cmd = [self.python, "-m", "ragtune", job.command, *job.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **job.env}
        with open(job.log, "ab") as log:  # the child keeps its own descriptor
            job.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, cwd=str(self.root),
                                           preexec_fn=_default_sigint if os.name == "posix" else None)
        job.state, job.started = "running", time.time()

    def _reap(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                if job.state == "running" and job.process is not None and job.process.poll() is not None:
                    job.returncode = job.process.returncode
                    job.state = {0: "finished", 130: "stopped"}.get(job.returncode, "failed")
                    job.ended = time.time()
