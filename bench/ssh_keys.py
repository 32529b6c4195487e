#!/usr/bin/env python3
"""Keystroke echo latency of an interactive SSH session, for bench/ssh.sh.

Usage: ssh_keys.py KEYS OUT -- SSH_COMMAND...

Runs SSH_COMMAND (an `ssh -tt …` that opens a shell) on a pseudo-terminal, switches the target
to a plain `bash --norc --noprofile` with a short prompt, then types KEYS lowercase letters one
at a time with small random pauses and times each until the target echoes it back. Every 40
letters the line is cleared with Ctrl-U (not timed). Writes one latency per line, in
microseconds, to OUT, and prints `p50 p99` (µs) on stdout. The same driver runs both sides, so
its own overhead cancels out. Standard library only.
"""

import os
import pty
import random
import select
import sys
import time

TIMEOUT = 5.0


def read_until(fd, needle, timeout=TIMEOUT):
    """Reads from fd until needle appears in what was read; returns all of it."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {needle!r} within {timeout}s; got {seen[-200:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"session ended; got {seen[-200:]!r}")
            seen += chunk
    return seen


def drain(fd, quiet=0.1):
    """Reads until nothing arrives for `quiet` seconds."""
    while True:
        ready, _, _ = select.select([fd], [], [], quiet)
        if not ready:
            return
        if not os.read(fd, 65536):
            return


def percentile(sorted_values, p):
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    keys, out = int(sys.argv[1]), sys.argv[2]
    argv = sys.argv[4:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    try:
        # The login shell first, then a plain bash with a fixed prompt.
        time.sleep(0.5)
        drain(fd, 0.3)
        os.write(fd, b"exec env PS1='$ ' bash --norc --noprofile\n")
        time.sleep(0.3)
        # The output names the prompt: the plain bash is running (its echo of the line does not
        # match, the expansion is not in it).
        os.write(fd, b"echo ready-$((40+2))-${PS1}end\n")
        read_until(fd, b"ready-42-$ end", 15)
        drain(fd, 0.3)
        rng = random.Random(42)
        samples = []
        for i in range(keys):
            if i and i % 40 == 0:
                os.write(fd, b"\x15")
                drain(fd, 0.1)
            c = bytes([rng.randrange(ord("a"), ord("z") + 1)])
            time.sleep(rng.uniform(0.005, 0.03))
            t0 = time.perf_counter_ns()
            os.write(fd, c)
            read_until(fd, c)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        os.write(fd, b"\x15exit\n")
        try:
            drain(fd, 0.5)
        except OSError:
            pass
    finally:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    with open(out, "w") as f:
        f.writelines(f"{s:.1f}\n" for s in samples)
    ordered = sorted(samples)
    print(f"{percentile(ordered, 50):.1f} {percentile(ordered, 99):.1f}")


if __name__ == "__main__":
    main()
