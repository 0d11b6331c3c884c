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
