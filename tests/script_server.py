"""Runs the scripts as ``python -m <module> <args>`` does, many times from one process that has
imported TensorFlow once: each run is a fork of this server (fresh flags, its own stdout, stderr,
directory and exit status), so a test of a script's refusal costs a fork instead of a new
interpreter and a TensorFlow import (10 s each on CI's cores).

Protocol: one JSON object per line on stdin, {"module" or "path", "args", "cwd", "env",
"timeout"}; one per line on stdout, {"returncode", "stdout", "stderr"}. `tests/helpers.py`'s `ScriptServer` speaks it.
"""

import json
import os
import runpy
import sys
import tempfile
import time
import traceback

import tensorflow  # noqa: F401  (the slow import, once, before any fork; no op runs here)

import vqvae_tf.cli  # noqa: F401
import vqvae_tf.pipeline.pipeline_lib  # noqa: F401
import vqvae_tf.serving.export_savedmodel_lib  # noqa: F401
import vqvae_tf.serving.export_tflite_lib  # noqa: F401


def _child(case, out, err) -> int:
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    for name, value in (case.get("env") or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(case["cwd"])
    sys.argv = [case.get("module") or case["path"], *case["args"]]
    try:
        if case.get("module"):
            runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
        else:  # a file's code, as ``python -c CODE`` runs it (the working directory first on the path)
            sys.path.insert(0, "")
            runpy.run_path(case["path"], run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _run(case) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(case, out, err)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.time() + case.get("timeout", 300)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": code,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def main():
    for line in sys.stdin:
        sys.stdout.write(json.dumps(_run(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
