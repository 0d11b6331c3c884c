"""TensorFlow set-up shared by the training and conversion commands.

The machines that train and convert are shared (2 cores, other jobs beside), so every command
caps TensorFlow's thread pools and silences its start-up chatter before it imports TensorFlow.
"""
from __future__ import annotations

import os

DEFAULT_THREADS = 2


def configure_tensorflow(threads: int = DEFAULT_THREADS):
    """Import TensorFlow with at most `threads` threads per pool and quiet C++ logs.

    Parameters
    ----------
    threads : int
        Upper bound for the intra-op and inter-op thread pools.

    Returns
    -------
    module
        The imported `tensorflow` module.

    Notes
    -----
    The thread pools can only be sized before TensorFlow runs its first operation; in a process
    that already did (a test session, a notebook) the call keeps the existing pools.
    """
    # Must be set before the first `import tensorflow` to take effect.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # the runtime is already initialised: its pools cannot change any more
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    return tf
