#!/usr/bin/env python3
"""The soak of `edgebone run` with faults (issue 16; run by tools/soak.sh).

Runs the given edgebone binary for DURATION on a looping camera-like stream of
I420 frames fed into a named pipe, YOLOv5n int8 detection, NDJSON reports to a
pseudo-terminal and a GPIO rule on the log driver. Faults come on a schedule, in
cycles: the frame pipe closed and reopened, the serial peer gone for 20 s, a burst
of truncated and garbage frames, frame size changes (announced with the config
and SIGHUP, and unannounced), SIGHUP with the config unchanged and with a broken
one; SIGTERM at the end. Every 10 s it samples RSS, open fds and threads
(/proc/PID) and the FPS and latency p99 of edgebone's stats line. Every serial
line is checked for its CRC and sequence. The verdict is printed at the end; the
exit code is 1 when it fails.

Python's standard library only: no ffmpeg, no PIL. The scene is tools/soak-bus.ppm
(tests/data/images/bus.jpg resized to 180x240 once, with Pillow, bicubic) sliding
across a black 320x240 frame, converted to I420 as tests/run.rs does (BT.601
limited range, chroma the mean of each 2x2 block).
"""

import argparse
import json
import os
import queue
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIZE = (320, 240)
OTHER_SIZE = (256, 192)
FPS = 30
SAMPLE_EVERY_S = 10
SERIAL_AWAY_S = 20
# Reports the serial writer keeps while its peer is away: small enough that
# 20 s away drops some, so the dropped count is tested.
SERIAL_QUEUE = 32
RSS_LIMIT_KB = 2048
# RSS readings per 10 s sample (0.1 s apart: a few frames at this machine's rate).
RSS_READINGS = 20
# RSS growth compares the least RSS of the samples in the minute after the
# warm-up with that of the last minute.
RSS_WINDOW_S = 60
SIGTERM_LIMIT_S = 1.0
RECOVER_WITHIN_S = 20.0


def parse_duration(text):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 2m or 1h, not {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


# --- frames -------------------------------------------------------------------


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    fields = data.split(maxsplit=4)
    if fields[0] != b"P6" or fields[3] != b"255":
        sys.exit(f"{path}: expected a binary PPM (P6) with 255 levels")
    width, height = int(fields[1]), int(fields[2])
    return width, height, fields[4]


def photo_planes(path):
    """The photo as I420 planes (Y rows, U rows, V rows), as tests/run.rs makes them."""
    width, height, rgb = read_ppm(path)
    ys, us, vs = [], [], []
    for y in range(height):
        row = rgb[y * width * 3 : (y + 1) * width * 3]
        ys.append(bytes(round(16 + 0.257 * row[i] + 0.504 * row[i + 1] + 0.098 * row[i + 2]) for i in range(0, len(row), 3)))
    for y in range(0, height, 2):
        u_row, v_row = bytearray(), bytearray()
        for x in range(0, width, 2):
            u = v = 0.0
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                i = ((y + dy) * width + x + dx) * 3
                r, g, b = rgb[i], rgb[i + 1], rgb[i + 2]
                u += 128 - 0.148 * r - 0.291 * g + 0.439 * b
                v += 128 + 0.439 * r - 0.368 * g - 0.071 * b
            u_row.append(round(u / 4))
            v_row.append(round(v / 4))
        us.append(bytes(u_row))
        vs.append(bytes(v_row))
    return width, height, ys, us, vs


def frames(planes, size, count=40):
    """A camera panning: the photo slides across a black frame and back."""
    pw, ph, ys, us, vs = planes
    width, height = size
    top = max(0, (height - ph) // 2) & ~1
    visible = min(ph, height)
    out = []
    for n in range(count):
        phase = n / (count / 2)
        left = int((width - pw) * (phase if phase <= 1 else 2 - phase)) & ~1
        shown = min(pw, width - left)
        y_plane, u_plane, v_plane = bytearray(b"\x10" * width * height), bytearray(b"\x80" * (width * height // 4)), bytearray(b"\x80" * (width * height // 4))
        for row in range(visible):
            at = (top + row) * width + left
            y_plane[at : at + shown] = ys[row][:shown]
        for row in range(visible // 2):
            at = (top // 2 + row) * (width // 2) + left // 2
            u_plane[at : at + shown // 2] = us[row][: shown // 2]
            v_plane[at : at + shown // 2] = vs[row][: shown // 2]
        out.append(bytes(y_plane + u_plane + v_plane))
    return out


# --- edgebone's log -------------------------------------------------------------


class Log(threading.Thread):
    """Copies edgebone's stderr to a file and keeps what the soak checks."""

    def __init__(self, stream, path):
        super().__init__(daemon=True)
        self.stream, self.file = stream, open(path, "w")
        self.lines = []  # (arrival time, text)
        self.changed = threading.Condition()
        # (time, fps, p99, serial dropped, memory kB, anon kB); the memory is what
        # edgebone measured between frames right after giving free heap pages back
        # (firmware/src/memory.rs), None from a build that does not log it.
        self.stats = []
        self.summary = None

    def run(self):
        for raw in self.stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.file.write(line + "\n")
            self.file.flush()
            now = time.time()
            match = re.search(r"stats: ([\d.]+) fps, latency .* p99 ([\d.]+) ms.*serial dropped (\d+)"
                              r"(?:, memory (\d+) kB \(anon (\d+) kB\))?", line)
            with self.changed:
                self.lines.append((now, line))
                if match:
                    memory = (int(match[4]), int(match[5])) if match[4] else (None, None)
                    self.stats.append((now, float(match[1]), float(match[2]), int(match[3]), *memory))
                if "summary {" in line:
                    self.summary = json.loads(line.split("summary ", 1)[1])
                self.changed.notify_all()

    def count(self, pattern, since=0.0):
        with self.changed:
            return sum(1 for t, line in self.lines if t >= since and pattern in line)

    def wait_for(self, pattern, since, timeout=10.0):
        end = time.time() + timeout
        with self.changed:
            while not any(t >= since and pattern in line for t, line in self.lines):
                left = end - time.time()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def matching(self, regex):
        with self.changed:
            return [m for _, line in self.lines for m in [re.search(regex, line)] if m]


# --- the frame pipe ------------------------------------------------------------


class Feeder(threading.Thread):
    """A camera process writing frames into the named pipe at FPS, looping."""

    def __init__(self, fifo, scenes, log):
        super().__init__(daemon=True)
        self.fifo, self.scenes, self.log = fifo, scenes, log
        self.size = SIZE
        self.fd = None
        self.actions = queue.Queue()
        self.written = 0

    def run(self):
        n = 0
        next_at = time.monotonic()
        while True:
            if self.fd is None:
                self.fd = os.open(self.fifo, os.O_WRONLY)  # waits for edgebone
            try:
                action, done = self.actions.get_nowait()
                action(self)
                done.set()
                continue
            except queue.Empty:
                pass
            frame = self.scenes[self.size][n % len(self.scenes[self.size])]
            n += 1
            if self.write(frame):
                self.written += 1
            next_at = max(next_at + 1 / FPS, time.monotonic() - 1)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def write(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
            return True
        except BrokenPipeError:
            os.close(self.fd)
            self.fd = None
            return False

    def close(self):
        """Closes the writer's end and waits until edgebone has seen it and closed
        its own, so that the next writer starts a new stream. edgebone logs the end
        before it closes the pipe: a writer that opened in between would write into
        a pipe whose bytes the kernel throws away once that last reader goes."""
        since = time.time()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.log.wait_for("the writer closed the pipe", since)
        deadline = time.time() + 5
        while self.reader_open() and time.time() < deadline:
            time.sleep(0.01)

    def reader_open(self):
        """Whether edgebone holds the pipe open (its fds, in /proc)."""
        fds = f"/proc/{self.pid}/fd"
        try:
            names = os.listdir(fds)
        except FileNotFoundError:
            return False  # edgebone is gone
        for fd in names:
            try:
                if os.readlink(f"{fds}/{fd}") == self.fifo:
                    return True
            except FileNotFoundError:
                pass
        return False

    def do(self, action):
        done = threading.Event()
        self.actions.put((action, done))
        done.wait(60)


# --- the serial peer ------------------------------------------------------------


class Receiver(threading.Thread):
    """The far end of the serial line: a pty master behind a symlink, as udev links
    a USB adapter. Checks every line's CRC and JSON, records the seqs."""

    def __init__(self, link):
        super().__init__(daemon=True)
        self.link = link
        self.lock = threading.Lock()
        self.seqs = []  # in arrival order
        self.corrupt = []
        self.cut = 0  # a partial line left when the peer went away (it is sent again)
        self.last_report_at = {}  # seq -> (arrival, captured_unix_ms)
        self.newest = (0.0, 0, 0.0)  # arrival, seq, captured_unix_ms
        self.stopping = False
        self.master = self.slave = None
        self.buf = b""
        self.plug()

    def plug(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        try:
            os.unlink(self.link)
        except FileNotFoundError:
            pass
        os.symlink(os.ttyname(slave), self.link)
        with self.lock:
            self.master, self.slave, self.buf = master, slave, b""

    def unplug(self):
        """The peer goes away without losing a line in flight: output is stopped
        first (edgebone's write then waits), what was sent is read, then the link
        goes and the pty closes."""
        os.unlink(self.link)
        termios.tcflow(self.slave, termios.TCOOFF)
        time.sleep(0.5)  # the reader thread drains the master meanwhile
        with self.lock:
            self.read_available()
            if self.buf:
                self.cut += 1
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = None
            self.buf = b""

    def run(self):
        while not self.stopping:
            with self.lock:
                master = self.master
            if master is None:
                time.sleep(0.05)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.1)
            except (OSError, ValueError):
                continue  # closed by unplug meanwhile
            if ready:
                with self.lock:
                    if self.master == master:
                        self.read_available()

    def read_available(self):
        while True:
            ready, _, _ = select.select([self.master], [], [], 0)
            if not ready:
                return
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                self.check(line.rstrip(b"\r"))

    def check(self, line):
        cut = line.rfind(b',"crc":')
        try:
            report = json.loads(line)
            good = cut > 0 and int(report["crc"], 16) == zlib.crc32(line[:cut])
        except (ValueError, KeyError, TypeError):
            good = False
        if not good:
            self.corrupt.append(line[:200])
            return
        seq = report["seq"]
        self.seqs.append(seq)
        self.newest = (time.time(), seq, report["captured_unix_ms"])

    def stop(self):
        self.stopping = True


# --- the run --------------------------------------------------------------------


def write_config(path, work, size, broken=False):
    width, height = size
    text = f"""# written by tools/soak.py
[model]
bundle = "{ROOT}/models/yolov5n_int8"
threads = 1
[task]
kind = "detect"
[source]
kind = "pipe"
path = "{work}/frames"
format = "yuv420"
width = {width}
height = {height}
[capture]
mode = "live"
retry_initial_ms = 50
retry_max_ms = 1000
[stdout]
enabled = false
[serial]
path = "{work}/ttyEDGE"
format = "ndjson"
queue = {SERIAL_QUEUE}
[gpio]
driver = "log"
[[gpio.rules]]
class = "person"
min_score = 0.5
pin = 17
action = "hold"
ms = 500
[stats]
interval_s = {SAMPLE_EVERY_S}
"""
    if broken:
        text = text.replace("width =", "widht =")
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def proc_status(pid):
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return status


def proc_sample(pid, rss_readings=1):
    """RSS, threads and open fds. RSS swings by several MB within one frame (the
    inference's buffers are allocated and freed), so with several readings 0.1 s
    apart the sample keeps their least (`rss_kb`, the floor a leak would raise)
    and their most."""
    rss, anon = [], []
    for i in range(rss_readings):
        if i:
            time.sleep(0.1)
        status = proc_status(pid)
        rss.append(int(status["VmRSS"].split()[0]))
        anon.append(int(status["RssAnon"].split()[0]))
    return {
        "rss_kb": min(rss),
        "rss_max_kb": max(rss),
        # The heap's part; the rest is mostly the binary's pages, which the
        # kernel may evict and fault in again (in the 1-hour run they did not move).
        "anon_kb": min(anon),
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def window_change(series, warmup):
    """(growth, text) of (time, rss kB, anon kB) readings: the least of the minute
    after the warm-up against the least of the last minute; None when nothing
    came after the warm-up."""
    after = [x for x in series if x[0] >= warmup]
    if not after:
        return None
    end_t = after[-1][0]
    window = min(RSS_WINDOW_S, (end_t - warmup) / 2)
    first = [x for x in after if x[0] <= warmup + window]
    last = [x for x in after if x[0] >= end_t - window]
    base, end = min(x[1] for x in first), min(x[1] for x in last)
    anon_base, anon_end = min(x[2] for x in first), min(x[2] for x in last)
    return end - base, (
        f"{base} kB in {warmup:.0f}-{warmup + window:.0f} s, {end} kB in the last {window:.0f} s "
        f"(growth {end - base} kB; limit {RSS_LIMIT_KB} kB); anonymous {anon_base} kB, then {anon_end} kB; "
        f"range after the warm-up {min(x[1] for x in after)}..{max(x[1] for x in after)} kB")


class Soak:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="edgebone-soak-"))
        os.makedirs(self.work, exist_ok=True)
        self.config = os.path.join(self.work, "edgebone.toml")
        self.faults = []  # dicts: name, start, end, logged, recovered
        self.rest = []  # samples taken between faults, after recovery
        self.samples = []
        self.t0 = None

    def say(self, text):
        print(f"[{time.time() - self.t0:7.1f} s] {text}" if self.t0 else text, flush=True)

    def start(self):
        planes = photo_planes(os.path.join(HERE, "soak-bus.ppm"))
        scenes = {size: frames(planes, size) for size in (SIZE, OTHER_SIZE)}
        fifo = os.path.join(self.work, "frames")
        if not os.path.exists(fifo):
            os.mkfifo(fifo)
        write_config(self.config, self.work, SIZE)
        self.receiver = Receiver(os.path.join(self.work, "ttyEDGE"))
        self.receiver.start()
        self.proc = subprocess.Popen(
            [self.args.bin, "run", "--config", self.config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(os.environ, RUST_LOG="info"),
        )
        self.t0 = time.time()
        self.log = Log(self.proc.stderr, os.path.join(self.work, "edgebone.log"))
        self.log.start()
        self.feeder = Feeder(fifo, scenes, self.log)
        self.feeder.pid = self.proc.pid
        self.feeder.start()
        self.say(f"edgebone pid {self.proc.pid}, work dir {self.work}, log {self.work}/edgebone.log")
        threading.Thread(target=self.sampler, daemon=True).start()

    def alive(self):
        return self.proc.poll() is None

    def sampler(self):
        next_at = time.monotonic()
        while self.alive():
            try:
                sample = proc_sample(self.proc.pid, rss_readings=RSS_READINGS)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                return
            sample["t"] = time.time() - self.t0
            stats = self.log.stats[-1] if self.log.stats else (0, 0.0, 0.0, 0, None, None)
            sample.update(fps=stats[1], p99_ms=stats[2], serial_dropped=stats[3], received=len(self.receiver.seqs))
            self.samples.append(sample)
            self.say(
                "sample: rss {rss_kb}..{rss_max_kb} kB (anon {anon_kb}), fds {fds}, threads {threads}, {fps} fps, p99 {p99_ms} ms, "
                "serial dropped {serial_dropped}, lines received {received}".format(**sample)
            )
            next_at += SAMPLE_EVERY_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    # The faults. Each returns the log lines it expects (pattern, at least how many).

    def pipe_closed_and_reopened(self):
        self.feeder.do(lambda f: (f.close(), time.sleep(1.0)))
        return [("the writer closed the pipe", 1)]

    def serial_peer_gone(self):
        self.receiver.unplug()
        time.sleep(SERIAL_AWAY_S)
        self.receiver.plug()
        return [("serial ", 1), ("lost (", 1), ("back after", 1), ("report(s) dropped, seq", 1)]

    def truncated_and_garbage_burst(self):
        frame_len = SIZE[0] * SIZE[1] * 3 // 2
        rng = random.Random(len(self.faults))

        def burst(feeder):
            for _ in range(5):
                feeder.write(rng.randbytes(rng.randrange(1, frame_len)))
                feeder.close()
                feeder.fd = os.open(feeder.fifo, os.O_WRONLY)
            feeder.write(rng.randbytes(frame_len * 3 + frame_len // 2))
            feeder.close()

        self.feeder.do(burst)
        return [("truncated frame", 6), ("the writer closed the pipe", 6)]

    def set_size(self, size):
        since = time.time()
        write_config(self.config, self.work, size)
        os.kill(self.proc.pid, signal.SIGHUP)
        self.log.wait_for("[source] is now", since)

        def restart(feeder):
            feeder.close()
            feeder.size = size

        self.feeder.do(restart)

    def frame_size_change(self):
        self.set_size(OTHER_SIZE)
        time.sleep(10)
        self.set_size(SIZE)
        return [("[source] is now", 2), ("the writer closed the pipe", 2)]

    def frame_size_change_unannounced(self):
        def restart(size):
            def action(feeder):
                feeder.close()
                feeder.size = size

            return action

        self.feeder.do(restart(OTHER_SIZE))
        time.sleep(10)
        self.feeder.do(restart(SIZE))
        # The other size's stream ends inside a frame (its length is not a
        # multiple of the configured frame's) unless by chance it does not.
        return [("the writer closed the pipe", 2)]

    def sighup_unchanged(self):
        os.kill(self.proc.pid, signal.SIGHUP)
        return [("[source] unchanged", 1)]

    def sighup_broken_config(self):
        since = time.time()
        write_config(self.config, self.work, SIZE, broken=True)
        os.kill(self.proc.pid, signal.SIGHUP)
        self.log.wait_for("the running settings stay", since)
        write_config(self.config, self.work, SIZE)
        return [("the running settings stay", 1)]

    CYCLE = [
        ("frame pipe closed and reopened", pipe_closed_and_reopened),
        ("serial peer gone for 20 s", serial_peer_gone),
        ("burst of truncated and garbage frames", truncated_and_garbage_burst),
        ("frame size change, config and SIGHUP", frame_size_change),
        ("frame size change, unannounced", frame_size_change_unannounced),
        ("SIGHUP, config unchanged", sighup_unchanged),
        ("SIGHUP, broken config", sighup_broken_config),
    ]
    # Seconds a cycle takes without the pauses between faults (measured roughly:
    # the serial fault's 20 s, the size changes' 2 x 10 s, reopening).
    CYCLE_S = 60

    def inject(self, name, fault):
        start = time.time()
        self.say(f"fault: {name}")
        expected = fault(self)
        end = time.time()
        recovered = self.wait_recovery(end)
        time.sleep(2)  # the log lines that end the fault
        logged = {pattern: self.log.count(pattern, since=start) for pattern, _ in expected}
        ok_logged = all(logged[p] >= n for p, n in expected)
        self.faults.append(dict(name=name, start=start - self.t0, end=end - self.t0, logged=logged, ok_logged=ok_logged, recovered=recovered))
        self.say(f"  {'logged' if ok_logged else 'NOT LOGGED'} {logged}; " + (f"recovered in {recovered:.1f} s" if recovered is not None else "NOT RECOVERED"))

    def wait_recovery(self, since):
        """Seconds until a report of a frame captured after `since` came over serial."""
        deadline = since + RECOVER_WITHIN_S
        while time.time() < deadline and self.alive():
            arrival, _, captured_ms = self.receiver.newest
            if captured_ms / 1e3 > since:
                return arrival - since
            time.sleep(0.1)
        return None

    def run(self):
        duration = self.args.duration
        warmup = min(300.0, duration / 4)
        pause = self.args.pause
        self.start()
        if not self.log.wait_for("serial ", 0, timeout=120) or self.wait_recovery(time.time()) is None:
            self.say("no report came over serial")
        while self.alive() and time.time() - self.t0 + self.CYCLE_S + len(self.CYCLE) * pause < duration - 5:
            for name, fault in self.CYCLE:
                if not self.alive():
                    break
                time.sleep(pause)
                self.rest.append(dict(proc_sample(self.proc.pid), t=time.time() - self.t0))
                self.inject(name, fault)
        while self.alive() and time.time() - self.t0 < duration:
            time.sleep(0.5)
        if self.alive():
            self.rest.append(dict(proc_sample(self.proc.pid), t=time.time() - self.t0))
        return self.finish(warmup)

    def finish(self, warmup):
        took = None
        if self.alive():
            sent = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
                took = time.monotonic() - sent
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.join(timeout=5)
        time.sleep(0.5)
        self.receiver.stop()
        return self.verdict(warmup, took)

    def memory_verdict(self, warmup, check):
        """Resident memory in the minute after the warm-up against the last minute.
        The measure is edgebone's own, between frames right after it gave free heap
        pages back (its stats lines): the same point every time, so the two
        windows compare. RSS read from outside swings by 20 MB within a frame, and
        its floor depends on whether a reading happened to fall just after a trim:
        printed for information."""
        logged = [(t - self.t0, rss, anon) for t, *_, rss, anon in self.log.stats if rss is not None]
        outside = [(s["t"], s["rss_kb"], s["anon_kb"]) for s in self.samples]
        change = window_change(logged, warmup)
        if change is None:
            check(False, "RSS: no memory in edgebone's stats lines after the warm-up")
        else:
            check(change[0] < RSS_LIMIT_KB, f"RSS (edgebone's stats lines, between frames after the trim): {change[1]}")
        change = window_change(outside, warmup)
        if change is not None:
            print(f"  info  RSS (the floor of the readings from outside): {change[1]}")
        peak = max((s["rss_max_kb"] for s in self.samples if s["t"] >= warmup), default=0)
        print(f"  info  RSS peak (within a frame) after the warm-up: {peak} kB")

    def verdict(self, warmup, sigterm_s):
        checks = []

        def check(ok, text):
            checks.append(ok)
            print(f"  {'PASS' if ok else 'FAIL'}  {text}")

        print("\nverdict")
        self.memory_verdict(warmup, check)
        for key in ("fds", "threads"):
            values = sorted({s[key] for s in self.rest})
            every = sorted({s[key] for s in self.samples})
            check(len(values) == 1, f"{key} between faults: {values} ({len(self.rest)} samples; every 10 s: {every[0]}..{every[-1]})")
        stats = [s for s in self.log.stats]
        if stats:
            fps = [s[1] for s in stats]
            p99 = sorted(s[2] for s in stats)
            print(f"  info  fps per 10 s: mean {sum(fps) / len(fps):.1f}, min {min(fps):.1f}, max {max(fps):.1f}; "
                  f"latency p99 per 10 s: median {p99[len(p99) // 2]:.0f} ms, max {p99[-1]:.0f} ms ({len(stats)} stats lines)")
        names = sorted({f["name"] for f in self.faults})
        check(len(names) == len(self.CYCLE), f"every kind of fault injected: {len(names)} of {len(self.CYCLE)} kinds, {len(self.faults)} faults in all")
        check(all(f["ok_logged"] for f in self.faults), f"every fault logged: {sum(f['ok_logged'] for f in self.faults)} of {len(self.faults)}")
        recoveries = [f["recovered"] for f in self.faults if f["recovered"] is not None]
        check(len(recoveries) == len(self.faults), f"every fault recovered from: {len(recoveries)} of {len(self.faults)}" + (f" (reports again within {max(recoveries):.1f} s at worst)" if recoveries else ""))
        summary = self.log.summary or {}
        check(bool(summary), f"no restart, clean exit: exit code {self.proc.returncode}, summary {json.dumps(summary)}")
        check(self.proc.returncode == 0, f"exit code {self.proc.returncode}")
        check(sigterm_s is not None and sigterm_s < SIGTERM_LIMIT_S, f"SIGTERM to exit: {sigterm_s if sigterm_s is None else round(sigterm_s, 3)} s (limit {SIGTERM_LIMIT_S} s)")
        rx = self.receiver
        check(not rx.corrupt, f"serial lines: {len(rx.seqs)} good, {len(rx.corrupt)} corrupt" + (f", first: {rx.corrupt[0]!r}" if rx.corrupt else "") + f", {rx.cut} cut by the peer leaving (sent again whole)")
        seqs = rx.seqs
        ordered = all(b > a for a, b in zip(seqs, seqs[1:]))
        gaps = [(a + 1, b - 1) for a, b in zip([-1] + seqs, seqs) if b > a + 1]
        gap_total = sum(b - a + 1 for a, b in gaps)
        logged = [(int(m[1]), int(m[2])) for m in self.log.matching(r"report\(s\) dropped, seq (\d+) to (\d+)")]
        dropped = summary.get("serial", {}).get("dropped")
        check(ordered, "seq strictly increasing (no duplicate, no reordering)")
        check(gaps == logged, f"gaps where reports were dropped: the receiver's gaps {gaps[:8]}{'...' if len(gaps) > 8 else ''} = edgebone's logged drops {logged[:8]}{'...' if len(logged) > 8 else ''}")
        check(dropped == gap_total and gap_total > 0, f"dropped count: edgebone {dropped}, the receiver's seq gaps {gap_total}")
        ok = all(checks)
        print(f"\nsoak {'PASSED' if ok else 'FAILED'} ({self.args.duration:.0f} s; log and config in {self.work})")
        return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("duration", type=parse_duration, help="90s, 2m, 1h")
    parser.add_argument("--bin", required=True, help="the edgebone binary")
    parser.add_argument("--work", help="folder for the fifo, the pty link, the config and the log")
    parser.add_argument("--pause", type=float, default=None, help="seconds between faults (5 under 10 min, 20 otherwise)")
    parser.add_argument("--only", help="only the faults whose names contain one of these words, comma-separated (to debug the soak)")
    args = parser.parse_args()
    if args.only:
        words = args.only.split(",")
        Soak.CYCLE = [(name, fault) for name, fault in Soak.CYCLE if any(w in name for w in words)]
    if args.pause is None:
        args.pause = 5.0 if args.duration < 600 else 20.0
    soak = Soak(args)
    try:
        ok = soak.run()
    finally:
        if soak.t0 and soak.alive():
            soak.proc.kill()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
