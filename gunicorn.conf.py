"""gunicorn settings for the DSP block server (`make run`).

gthread workers: each worker process serves several requests at once with threads, and numpy
releases the GIL in its heavy loops. The defaults suit a 2-core machine; override with
WEB_CONCURRENCY (worker processes) and GUNICORN_THREADS (threads per worker).
"""
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '4446')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A 1,000-window batch takes seconds, not minutes; anything slower is a stuck worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On SIGTERM (a deploy, a scale-in) workers stop accepting and finish what is in flight for up to
# this long before they are killed: longer than a big batch takes, shorter than an orchestrator's patience.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# The app writes its own structured access line per request (dsp_server.access).
accesslog = None
errorlog = "-"
# Build the app once in the master: a bad configuration stops the server at start with a clear
# message (instead of workers failing to boot in a loop), and workers share its memory.
# Anything that is not fork-safe (TFLite interpreters, JSON parsers) is created lazily per thread.
preload_app = True
# gunicorn 27 opens a control socket under $HOME by default; the container's user has no home,
# and concurrent servers on one machine would share the socket. Nothing here uses it.
control_socket_disable = True

# Prometheus multiprocess mode (server_ops.py): every worker writes its counts to files in
# PROMETHEUS_MULTIPROC_DIR and a scrape sums them. It must be set here, before the app (and so
# prometheus_client) is imported. Files left by an earlier run would be counted again: a given
# directory is emptied at start; without one, a fresh temporary directory is used and removed.
import atexit
import glob
import shutil
import tempfile

_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
# A directory this file made is marked in the environment with its master's pid: a re-read of this
# file (SIGHUP) keeps it, and a process started from this environment (another server, a test
# runner) neither reuses nor removes it, but makes its own.
_mark = os.environ.get("DSP_OWN_METRICS_DIR", "")
_own_metrics_dir = not _metrics_dir or _mark == f"{os.getpid()}:{_metrics_dir}"
if not _metrics_dir or (not _own_metrics_dir and _mark.endswith(f":{_metrics_dir}")):
    _own_metrics_dir = True
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dsp-metrics-")
    os.environ["DSP_OWN_METRICS_DIR"] = f"{os.getpid()}:{_metrics_dir}"
elif not _own_metrics_dir:
    os.makedirs(_metrics_dir, exist_ok=True)
    for _stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(_stale)


def child_exit(server, worker):
    # A dead worker's counters stay in the sums; only its live gauges (none here yet) go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _remove_metrics_dir(master_pid=os.getpid()):
    # atexit, not on_exit: it also runs when the app fails to load; workers inherit the hook.
    if _own_metrics_dir and os.getpid() == master_pid:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


atexit.register(_remove_metrics_dir)
