"""zoro-train end to end: the program as a user runs it (ctest runs one case per test).

    e2e.py --bin path/to/zoro-train --work DIR CASE

Cases:
  learns         a short default run: exit 0, a JSON line per step, the loss falls clearly,
                 eval lines with the task's accuracy, a sample at the end
  kill           SIGKILL mid-run, resume from the last checkpoint: the losses of an
                 uninterrupted run
  resume         save -> stop -> resume continues the loss curve exactly (offload, --no-offload
                 and --dpu): a run interrupted at step k and resumed logs bit-identical losses
  parity         offload vs --no-offload: identical loss curves with fp32 weights; within bf16
                 tolerance with bf16
  weights        --save-weights then --init-weights round trip: same first loss; a file of
                 another shape or truncated is refused naming the tensor or the problem
  bad_input      every bad input exits non-zero (not by a signal) with a message naming it
  mpi            mpirun -np 2: ranks train data-parallel, rank 0 logs, per-rank checkpoints
                 resume exactly; a world-size change is refused
Only the standard library: this runs under Debian's /usr/bin/python3 without packages.
"""
import argparse
import json
import math
import os
import shutil
import struct
import re
import signal
import subprocess
import sys
import time

TIMEOUT_S = 600


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(binary, args, expect_ok=True, env=None, prefix=None):
    cmd = (prefix or []) + [binary] + args
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    sys.stdout.write(p.stdout[-4000:])
    sys.stdout.write(p.stderr[-4000:])
    if expect_ok and p.returncode != 0:
        fail("exit %d from %s" % (p.returncode, " ".join(cmd)))
    return p


def read_log(path):
    steps, evals = [], []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            (steps if "step" in rec else evals).append(rec)
    return steps, evals


# The small, fast shape every case trains (the default preset's data, a smaller model), on the
# host backend: its results are bit-reproducible, which the exact comparisons below rely on
# (CUDA's atomics are not; the GPU tests compare with tolerances instead).
SMALL = ["--device", "host", "--layers", "2", "--channels", "32", "--heads", "2", "--micro-batch", "4",
         "--seq-len", "24", "--sample-tokens", "0", "--eval-every", "0", "--log-every", "5"]


def small(**flags):
    """SMALL with some flags' values replaced: small(eval_every=2) sets --eval-every 2."""
    args = list(SMALL)
    for k, v in flags.items():
        args[args.index("--" + k.replace("_", "-")) + 1] = str(v)
    return args


def case_learns(b, work):
    log = os.path.join(work, "log.jsonl")
    p = run(b, ["--device", "host", "--steps", "60", "--json-log", log, "--eval-every", "30", "--eval-batches", "2",
                "--sample-tokens", "12", "--log-every", "10", "--micro-batch", "8"])
    steps, evals = read_log(log)
    if [s["step"] for s in steps] != list(range(1, 61)):
        fail("expected one JSON line per step 1..60, got %s" % [s["step"] for s in steps])
    for s in steps:
        for k in ("loss", "lr", "grad_norm", "tokens_per_s", "step_ms", "compute_ms",
                  "optimizer_ms", "data_wait_ms", "device_bytes", "pinned_host_bytes"):
            if k not in s or not math.isfinite(float(s[k])):
                fail("step %d: field %s missing or not finite: %s" % (s["step"], k, s))
    first = sum(s["loss"] for s in steps[:5]) / 5
    last = sum(s["loss"] for s in steps[-5:]) / 5
    if not last < first - 0.5:
        fail("the loss did not fall clearly: first 5 steps %.3f, last 5 %.3f" % (first, last))
    if len(evals) != 2 or "char_accuracy" not in evals[-1]:
        fail("expected 2 eval lines with the task's accuracy, got %s" % evals)
    for needle in ("step 60/60", "eval @ step 60", "sample: ", "done: 60 steps"):
        if needle not in p.stdout:
            fail("output lacks %r" % needle)


def losses(path):
    return [s["loss"] for s in read_log(path)[0]]


def case_resume(b, work):
    for name, extra in (("offload", []), ("no_offload", ["--no-offload"]),
                        ("dpu", ["--dpu", "--engine-config", write_dpu_config(work)])):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        full_log = os.path.join(d, "full.jsonl")
        run(b, SMALL + extra + ["--steps", "12", "--json-log", full_log])
        ck = os.path.join(d, "ck")
        part_log = os.path.join(d, "part.jsonl")
        run(b, SMALL + extra + ["--steps", "12", "--json-log", part_log,
                                "--checkpoint-dir", ck, "--checkpoint-every", "5",
                                "--budget-hours", "0.0000001"])
        # The budget stopped it after its first step, with a checkpoint; resume to the end.
        done = len(losses(part_log))
        if not 1 <= done < 12:
            fail("%s: the budget should have stopped the run early; it ran %d steps" % (name, done))
        run(b, SMALL + extra + ["--steps", "12", "--json-log", part_log,
                                "--checkpoint-dir", ck, "--resume"])
        a, r = losses(full_log), losses(part_log)
        if a != r:
            fail("%s: resumed curve differs from the uninterrupted one:\n%s\n%s" % (name, a, r))
        print("%s: %d steps, resumed after %d, identical" % (name, len(a), done))


def case_kill(b, work):
    """SIGKILL in the middle of a run (perhaps in the middle of a checkpoint write): the resumed
    run continues from the last complete checkpoint with the losses of an uninterrupted run."""
    args = SMALL + ["--steps", "40", "--warmup-steps", "5"]
    full = os.path.join(work, "full.jsonl")
    run(b, args + ["--json-log", full])
    ck = os.path.join(work, "ck")
    part = os.path.join(work, "part.jsonl")
    cmd = [b] + args + ["--json-log", part, "--checkpoint-dir", ck, "--checkpoint-every", "3"]
    print("$ " + " ".join(cmd) + "   (killed once it has logged 10 steps)", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(part) and len(open(part).readlines()) >= 10:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        fail("the run ended (exit %s) before it could be killed" % proc.returncode)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    p = run(b, args + ["--json-log", part, "--checkpoint-dir", ck, "--resume"])
    m = re.search(r"resumed from .* at step (\d+)", p.stdout)
    if not m:
        fail("the resumed run did not say where it resumed")
    k = int(m.group(1))
    if not 3 <= k < 40 or k % 3 != 0:
        fail("resumed at step %d: expected a multiple of 3 (the checkpoint interval)" % k)
    want = {s["step"]: s["loss"] for s in read_log(full)[0]}
    got = [s for s in read_log(part)[0]]
    # The log was trimmed to the checkpoint on resume: one record per step, as if never killed.
    if [s["step"] for s in got] != list(range(1, 41)):
        fail("the resumed log is not one record per step: %s" % [s["step"] for s in got])
    resumed = got[[i for i, s in enumerate(got) if s["step"] == k + 1][-1]:]
    if [s["step"] for s in resumed] != list(range(k + 1, 41)):
        fail("the resumed run logged steps %s" % [s["step"] for s in resumed])
    for s in resumed:
        if s["loss"] != want[s["step"]]:
            fail("step %d: loss %r after resume, %r uninterrupted" % (s["step"], s["loss"],
                                                                    want[s["step"]]))
    print("killed after >= 10 steps, resumed at step %d, steps %d..40 identical" % (k, k + 1))


def write_dpu_config(work):
    path = os.path.join(work, "dpu.toml")
    with open(path, "w") as f:
        f.write("[offload]\ndpu_warmup_steps = 0\n")
    return path


def case_parity(b, work):
    for dtype, exact in (("fp32", True), ("bf16", False)):
        logs = []
        for extra in ([], ["--no-offload"]):
            log = os.path.join(work, "%s%s.jsonl" % (dtype, "".join(extra)))
            run(b, SMALL + extra + ["--steps", "10", "--dtype", dtype, "--json-log", log,
                                    "--grad-accum", "2", "--clip", "0.5"])
            logs.append(losses(log))
        a, c = logs
        if exact and a != c:
            fail("fp32: offload and --no-offload losses differ:\n%s\n%s" % (a, c))
        if not exact:
            worst = max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, c))
            if worst > 2e-2:
                fail("bf16: offload vs --no-offload relative loss gap %.3g > 2e-2" % worst)
        print("%s: offload vs --no-offload %s" % (dtype, "identical" if exact else "within bf16"))


def case_weights(b, work):
    w = os.path.join(work, "w.safetensors")
    log1 = os.path.join(work, "a.jsonl")
    run(b, SMALL + ["--steps", "3", "--save-weights", w, "--json-log", log1])
    log2 = os.path.join(work, "b.jsonl")
    run(b, SMALL + ["--steps", "1", "--init-weights", w, "--json-log", log2, "--lr", "1e-9",
                    "--min-lr", "0"])
    # The weights after 3 steps give a loss below the random start.
    if not losses(log2)[0] < losses(log1)[0]:
        fail("loading the saved weights did not start from the trained model")
    # Another shape: refused naming a tensor and both shapes.
    p = run(b, small(channels=64) + ["--init-weights", w, "--steps", "1"], expect_ok=False)
    expect_error(p, ["wte.weight"])
    # Truncated.
    t = os.path.join(work, "truncated.safetensors")
    with open(w, "rb") as f:
        data = f.read()
    with open(t, "wb") as f:
        f.write(data[: len(data) // 2])
    expect_error(run(b, SMALL + ["--init-weights", t, "--steps", "1"], expect_ok=False), [t])


def expect_error(p, needles):
    if p.returncode <= 0:
        fail("expected a non-zero exit (not a signal), got %d" % p.returncode)
    for n in needles:
        if n not in p.stderr:
            fail("the error message lacks %r:\n%s" % (n, p.stderr))


def case_bad_input(b, work):
    empty = os.path.join(work, "empty.txt")
    open(empty, "w").close()
    tiny = os.path.join(work, "tiny.txt")
    with open(tiny, "w") as f:
        f.write("abc")
    garbage = os.path.join(work, "garbage.safetensors")
    with open(garbage, "wb") as f:
        f.write(struct.pack("<Q", 1 << 60) + b"{not json")
    badtoml = os.path.join(work, "bad.toml")
    with open(badtoml, "w") as f:
        f.write("[offload]\nbucket_count = -3\n")
    cases = [
        (["--data", "/nonexistent/corpus.txt"], ["/nonexistent/corpus.txt"]),
        (["--data", empty], [empty]),
        (["--data", tiny, "--seq-len", "24"], [tiny]),
        (["--steps", "-5"], ["--steps"]),
        (["--steps", "0"], ["--steps"]),
        (["--bogus-flag"], ["bogus-flag"]),
        (["--layers", "-1"], ["layers"]),
        (["--channels", "30", "--heads", "4"], ["channels"]),
        (["--seq-len", "100000"], ["seq-len"]),
        (["--micro-batch", "0"], ["--micro-batch"]),
        (["--dtype", "int8"], ["dtype"]),
        (["--resume"], ["--resume"]),
        (["--resume", "--checkpoint-dir", os.path.join(work, "no-such-ckpt")],
         [os.path.join(work, "no-such-ckpt")]),
        (["--init-weights", garbage], [garbage]),
        (["--init-weights", os.path.join(work, "missing.safetensors")], ["missing.safetensors"]),
        (["--engine-config", badtoml], ["bucket_count"]),
        (["--tokenizer", "gpt2"], ["--bpe"]),
        (["--device", "nonsense"], ["nonsense"]),
        (["--preset", "gpt7"], ["gpt7"]),
    ]
    for args, needles in cases:
        p = run(b, args + ["--steps" if "--steps" not in args else "--seed", "2"], expect_ok=False)
        expect_error(p, needles)
    # --help is not an error.
    p = run(b, ["--help"])
    if "--no-offload" not in p.stdout:
        fail("--help does not list --no-offload")


def case_mpi(b, work, mpirun):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    pre = [mpirun, "-np", "2", "--oversubscribe"]
    full = os.path.join(work, "full.jsonl")
    run(b, SMALL + ["--steps", "8", "--json-log", full], env=env, prefix=pre)
    ck = os.path.join(work, "ck")
    part = os.path.join(work, "part.jsonl")
    run(b, SMALL + ["--steps", "8", "--json-log", part, "--checkpoint-dir", ck,
                    "--budget-hours", "0.0000001"], env=env, prefix=pre)
    run(b, SMALL + ["--steps", "8", "--json-log", part, "--checkpoint-dir", ck, "--resume"],
        env=env, prefix=pre)
    if losses(full) != losses(part):
        fail("2 ranks: resumed curve differs:\n%s\n%s" % (losses(full), losses(part)))
    # The same checkpoint on one rank: refused, naming both world sizes.
    p = run(b, SMALL + ["--steps", "8", "--checkpoint-dir", ck, "--resume"], expect_ok=False)
    expect_error(p, ["2", "1"])
    # Evals (averaged over ranks) and --save-weights (gathered from every rank's shard).
    w = os.path.join(work, "w.safetensors")
    log = os.path.join(work, "eval.jsonl")
    run(b, small(eval_every=2) + ["--steps", "4", "--eval-batches", "1", "--save-weights", w,
                                  "--json-log", log], env=env, prefix=pre)
    if len(read_log(log)[1]) != 2 or not os.path.exists(w):
        fail("2 ranks: expected 2 eval records and the weights file")
    run(b, SMALL + ["--steps", "1", "--init-weights", w], env=env, prefix=pre)
    # A failure on a rank (a data file too small to give every rank a share) ends the whole job
    # with a message naming the rank, instead of leaving the others waiting in a collective.
    tiny = os.path.join(work, "tiny.txt")
    with open(tiny, "w") as f:
        f.write("x" * 26)
    p = run(b, SMALL + ["--steps", "2", "--data", tiny], env=env, prefix=pre, expect_ok=False)
    expect_error(p, ["error on rank", "too few for 2 ranks"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("case")
    a = ap.parse_args()
    work = os.path.join(a.work, a.case)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cases = {"learns": case_learns, "resume": case_resume, "kill": case_kill, "parity": case_parity,
             "weights": case_weights, "bad_input": case_bad_input}
    if a.case == "mpi":
        case_mpi(a.bin, work, a.mpirun)
    elif a.case in cases:
        cases[a.case](a.bin, work)
    else:
        fail("unknown case " + a.case)
    print("PASS " + a.case)


if __name__ == "__main__":
    main()
