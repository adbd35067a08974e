"""The two kinds of log line rknn-toolkit-lite2 produces.

- The Python side (`rknnlite.api.rknn_log`): one letter for the level, a space, the message:
  `W rknn-toolkit-lite2 version: 2.5.0`, `E Catch exception when init runtime!`, and
  `E Traceback (most recent call last): ...` for a traceback. To stdout here: the real compiled
  module names a `stdout_handler` (a logging StreamHandler); which stream it really uses was not
  verifiable off-board.
- The C runtime (librknnrt.so): `I RKNN: [HH:MM:SS.mmm] message`, written by native code. To
  stderr here, as the RKNN native logger of the host toolkit (librknnc) writes it.
"""

import datetime
import sys


def _write(stream, text):
    stream.write(text + "\n")
    stream.flush()


class RKNNLog:
    def __init__(self, verbose=False):
        self.verbose = verbose

    def e(self, msg, throw=True):  # the real one takes a second argument; rknn_lite passes False
        _write(sys.stdout, "E " + str(msg))

    def w(self, msg):
        _write(sys.stdout, "W " + str(msg))

    def i(self, msg):
        _write(sys.stdout, "I " + str(msg))

    def d(self, msg):
        if self.verbose:
            _write(sys.stdout, "D " + str(msg))

    def p(self, msg):
        _write(sys.stdout, str(msg))


def set_log_level_and_file_path(verbose, verbose_file=None):
    return RKNNLog(verbose)


def runtime_log(level, msg):
    """A line from librknnrt: `E RKNN: [03:49:54.682] message`."""
    now = datetime.datetime.now()
    stamp = now.strftime("%H:%M:%S.") + "%03d" % (now.microsecond // 1000)
    _write(sys.stderr, "%s RKNN: [%s] %s" % (level, stamp, msg))
