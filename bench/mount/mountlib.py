"""What the mount benchmarks share: the three mounts and /proc readings, beside what every
benchmark shares (bench/benchlib.py: the local S3 server, stopping processes).

run.py and compare.py start the same things the same way, so they live here once. Every process
started is remembered, and cleanup() unmounts and stops them all (in a `finally`), so a failed run
leaves no mount behind. Only the standard library.

The server is s3rver 3.7.1 (`tests/s3rver/start.js --legacy`): s3fs 1.90 signs GET /bucket/ in a
form the verifying server (4.0.4) rejects. rclone runs without AWS_CA_BUNDLE (it would load it as
a CA file).
"""
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402 (bench/, on the path just above)
from benchlib import IP, ROOT, procs, s3_env, s3_stats, stop_processes  # noqa: E402,F401 (run.py and compare.py import these from here)

PORT = 7400 + os.getpid() % 500
BUCKET = "bench"

mounts = []


def log(msg):
    print("# %s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def start_s3(work):
    """Starts the legacy local S3 server with one bucket; returns its port."""
    return benchlib.start_s3(work, BUCKET, legacy=True)


def mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def wait_mounted(path, proc, what, log_path=None):
    deadline = time.time() + 30
    while not mounted(path):
        if proc.poll() is not None or time.time() > deadline:
            tail = ""
            if log_path and os.path.exists(log_path):
                with open(log_path, errors="replace") as f:
                    tail = ":\n" + "".join(f.readlines()[-10:])
            sys.exit("bench: %s did not mount %s%s" % (what, path, tail))
        time.sleep(0.05)


def unmount(proc, path):
    """Stops a mounting process (SIGTERM unmounts shoald and rclone; s3fs needs an unmount)."""
    if proc.poll() is None:
        subprocess.run(["umount", path], stderr=subprocess.DEVNULL)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if mounted(path):
        subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def _mounting(p, mnt, what, log_path):
    procs.append(p)
    wait_mounted(mnt, p, what, log_path)
    mounts.append((p, mnt))
    return p, mnt


def start_shoald(shoald, work, name, endpoint, key, block="4M", read_only=True):
    """One shoald --mount with its block store under work/name; returns (process, mount point)."""
    d = os.path.join(work, name)
    mnt = os.path.join(d, "mnt")
    os.makedirs(mnt)
    args = [shoald, "--node-id", name, "--bind", "%s:%d" % (IP, PORT), "--bucket", "s3://" + BUCKET,
            "--endpoint", endpoint, "--path-style", "--region", "us-east-1", "--cache-dir", d + "/cache",
            "--cache-size", "8G", "--block-size", block, "--cluster-key", key, "--control", d + "/ctl.sock",
            "--metrics", "off", "--log-level", "warn", "--mount", mnt] + (["--read-only"] if read_only else [])
    log_path = os.path.join(d, "log")
    return _mounting(subprocess.Popen(args, stderr=open(log_path, "w")), mnt, "shoald", log_path)


def start_s3fs(work, port, cache=False):
    """s3fs, read-only; with cache=True it keeps what it reads in a disk cache (use_cache)."""
    mnt = os.path.join(work, "s3fs")
    os.makedirs(mnt)
    pw = os.path.join(work, "s3fs.passwd")
    with open(pw, "w") as f:
        f.write("S3RVER:S3RVER\n")
    os.chmod(pw, 0o600)
    args = ["s3fs", BUCKET, mnt, "-f", "-o", "url=http://%s:%d" % (IP, port), "-o", "use_path_request_style",
            "-o", "passwd_file=" + pw, "-o", "ro"]
    if cache:
        os.makedirs(os.path.join(work, "s3fs-cache"))
        args += ["-o", "use_cache=" + os.path.join(work, "s3fs-cache")]
    log_path = os.path.join(work, "s3fs.log")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    return _mounting(p, mnt, "s3fs", log_path)


def start_rclone(work, port, cache=False):
    """rclone mount, read-only; with cache=True its VFS keeps what it reads on disk (full mode)."""
    mnt = os.path.join(work, "rclone")
    os.makedirs(mnt)
    env = dict(os.environ, RCLONE_CONFIG_S3RV_TYPE="s3", RCLONE_CONFIG_S3RV_PROVIDER="Other",
               RCLONE_CONFIG_S3RV_ACCESS_KEY_ID="S3RVER", RCLONE_CONFIG_S3RV_SECRET_ACCESS_KEY="S3RVER",
               RCLONE_CONFIG_S3RV_ENDPOINT="http://%s:%d" % (IP, port), RCLONE_CONFIG_S3RV_REGION="us-east-1",
               RCLONE_CONFIG_S3RV_FORCE_PATH_STYLE="true")
    env.pop("AWS_CA_BUNDLE", None)
    args = ["rclone", "mount", "s3rv:" + BUCKET, mnt, "--read-only"]
    args += (["--vfs-cache-mode", "full", "--cache-dir", os.path.join(work, "rclone-cache")] if cache
             else ["--vfs-cache-mode", "off"])
    log_path = os.path.join(work, "rclone.log")
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    return _mounting(p, mnt, "rclone", log_path)


def cleanup(work):
    """Unmounts every mount and stops every process started here; removes work if nothing is left
    mounted under it."""
    for p, mnt in mounts:
        unmount(p, mnt)
    stop_processes(procs)
    if not any(mounted(m) for _, m in mounts):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("bench: a mount is still there; %s kept" % work, file=sys.stderr)


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_whole(path):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += len(b)


def list_dirs(root, names):
    """Lists each directory holding `names` once, as a dataset class does before reading."""
    for d in sorted({os.path.dirname(n) for n in names}):
        os.listdir(os.path.join(root, d))


def get_whole(port, key):
    """GETs one object whole and keeps nothing; returns its length. (s3rver 3.7.1 checks no
    signature, so a plain GET is a direct GET of the object.)"""
    n = 0
    with urllib.request.urlopen("http://%s:%d/%s/%s" % (IP, port, BUCKET, key)) as r:
        while True:
            b = r.read(1 << 20)
            if not b:
                return n
            n += len(b)


def timed_all(fn, names, sizes, threads, what):
    """Runs fn(name) for every name with `threads` threads; returns the seconds it took. Exits when
    the lengths fn returns are not `sizes`."""
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        got = list(ex.map(fn, names))
    t = time.perf_counter() - t0
    if got != sizes:
        sys.exit("bench: short reads from %s" % what)
    return t


def open_read_close(root, names):
    """Opens, reads whole and closes each file in turn; returns seconds."""
    t0 = time.perf_counter()
    for n in names:
        fd = os.open(os.path.join(root, n), os.O_RDONLY)
        while os.read(fd, 1 << 17):
            pass
        os.close(fd)
    return time.perf_counter() - t0


def best(fn, rounds):
    return min(fn() for _ in range(rounds))


def quiet(fn, *args):
    """fn(*args) after 0.2 s: a block's fetch goes on after its first bytes were returned, and
    s3rver serves one request at a time, so a sample without the pause would wait behind the
    previous one's download."""
    time.sleep(0.2)
    return fn(*args)


def ttfb_mount(path):
    """Seconds to open a file and read its first 64 KiB."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 65536)
    t = time.perf_counter() - t0
    os.close(fd)
    return t


def ttfb_get(port, key):
    """Seconds to the first 64 KiB of a GET of the whole object."""
    t0 = time.perf_counter()
    with urllib.request.urlopen("http://%s:%d/%s/%s" % (IP, port, BUCKET, key)) as r:
        r.read(65536)
        t = time.perf_counter() - t0
    return t
