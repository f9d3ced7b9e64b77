#!/usr/bin/env python3
"""High-precision accuracy check of `smooth-topk loss` against a 60-digit mpmath oracle.

Usage (from the repository root):

    python3 scripts/oracle_check.py --cases 3500 --seed 1

`--cases N` is the number of random cases *per precision*: N smooth-svm cases in f64, N in
f32, and the same N f64 score vectors are also run through `--loss hard-svm`. Every case is
one process invocation of the already-built binary (target/release/smooth-topk; nothing is
built here), with the sample on stdin. A small batch check also runs several samples through
one invocation and requires the lines to match the single-sample runs byte for byte.

Oracle (independent of the Rust code, see `smooth_oracle`): mp.dps = 60, x_j = s_j/(k tau),
e_j = exp(x_j) in mpmath (no log space; mpmath's exponent range is unbounded), sigma_j by the
O(n k) recursion, leave-one-out sigma_{j-1}(e' without i) from prefix/suffix coefficient
lists (O(n k), exact in mp precision, all terms positive). For k close to n-1 the same is done
on the reciprocal weights f = 1/e' (sigma_j(e') = prod(e') sigma_{m-j}(f), m = n-1), which
makes k = n-1 an O(n) computation. Scores are converted exactly (mpf of the double; for f32
runs the scores, tau and alpha are rounded to float32 first and exactly those values go to
both the CLI and the oracle). A self-test at start compares the oracle with subset
enumeration + mpmath numerical differentiation (n <= 7) and the forward path with the
reciprocal path.

Errors (per case):
    loss_err = |L - L*| / max(|L*|, 1e-30)
    grad_err = max_i |g_i - g*_i| / max(max_i |g*_i|, 1e-30)
    grad_err_strict: same with the floor at the smallest normal of the precision (info only)
Bars: f32 1e-4 for both, f64 1e-9 for both; plus finite outputs, exit status 0, n gradient
entries. Hard loss (f64): rel error vs the exact max(0, alpha + (s_\\y[k] - s_y)/k) must be
<= 1e-15 (also reported: error in ulps of the condition scale alpha + |s_\\y[k] - s_y|/k, and
a subgradient check where the k-th largest is unique and the hinge is not at its kink).

Extra rows (--near-margin M, default 300 per precision): stress cases with the label score at
the hinge at a large score scale and small tau, where L is very sensitive to the last bits of
the inputs.

Input-parsing diagnostic: for every case the scores are read back exactly as the CLI parsed
them (through the hard loss with k = 1, alpha = 0, which returns a score unchanged; see
`parsed_scores`), and the errors are also reported against the oracle evaluated on those parsed
values. Pass/fail always uses the scores as written (the exact decimal text sent to the CLI);
the second set of columns separates JSON-parsing error from the loss computation itself.

Failures are written to /tmp/oracle_failures/ (<tag>.jsonl = the exact input line,
<tag>.params.json = parameters, command, CLI output and oracle values). All per-case results
go to --results (default /tmp/oracle_check_results.jsonl).
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import mpmath
import numpy as np
from mpmath import mp, mpf

mp.dps = 60

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "smooth-topk")
FAIL_DIR = "/tmp/oracle_failures"  # default of --fail-dir

BARS = {"f32": 1e-4, "f64": 1e-9}
HARD_BAR = 1e-15
LOSS_FLOOR = 1e-30
GRAD_FLOOR = 1e-30
STRICT_FLOOR = {"f32": float(np.finfo(np.float32).tiny), "f64": float(np.finfo(np.float64).tiny)}

SHAPES = ["gaussian", "ties", "spike", "very_negative", "label_max", "label_min", "all_equal"]

# --------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------


def esp(vals, d):
    """sigma_0 .. sigma_d of vals (list of mpf) by the recursion sigma_j += v sigma_{j-1}."""
    s = [mpf(1)] + [mpf(0)] * d
    for c, v in enumerate(vals, 1):
        for j in range(min(d, c), 0, -1):
            s[j] += v * s[j - 1]
    return s


def loo_ratio(vals, j):
    """For every i: vals_i * sigma_{j-1}(vals without i) / sigma_j(vals)  (0 when j == 0).

    sigma_{j-1}(vals without i) is the degree-(j-1) coefficient of prefix(i) * suffix(i+1),
    where prefix/suffix are the truncated products of (1 + v X); all terms are positive.
    """
    n = len(vals)
    if j == 0:
        return [mpf(0)] * n
    d = j - 1
    full = esp(vals, j)[j]
    suf = [None] * (n + 1)
    cur = [mpf(1)] + [mpf(0)] * d
    suf[n] = list(cur)
    for i in range(n - 1, -1, -1):
        v = vals[i]
        for t in range(d, 0, -1):
            cur[t] += v * cur[t - 1]
        suf[i] = list(cur)
    out = []
    pre = [mpf(1)] + [mpf(0)] * d
    for i in range(n):
        sf = suf[i + 1]
        loo = mpmath.fsum(pre[a] * sf[d - a] for a in range(d + 1))
        out.append(vals[i] * loo / full)
        v = vals[i]
        for t in range(d, 0, -1):
            pre[t] += v * pre[t - 1]
    return out


def smooth_oracle(scores, label, k, tau, alpha, path="auto"):
    """Exact (60-digit) smooth top-k SVM loss and gradient. Returns (L, [g_i]) as mpf.

    path: "fwd" works on e' (cost ~k per entry), "rec" on f = 1/e' (cost ~n-k per entry),
    "auto" picks the cheaper one.
    """
    n = len(scores)
    m = n - 1
    s = [mpf(v) for v in scores]
    tau = mpf(tau)
    alpha = mpf(alpha)
    kt = k * tau
    e = [mpmath.exp(v / kt) for v in s]
    ep = [e[i] for i in range(n) if i != label]
    if path == "auto":
        path = "fwd" if k <= m - k + 1 else "rec"
    if path == "fwd":
        sig = esp(ep, k)
        ratio = sig[k] / sig[k - 1]  # sigma_k(e') / sigma_{k-1}(e')
        pk = loo_ratio(ep, k)
        pk1 = loo_ratio(ep, k - 1)
        diff = [a - b for a, b in zip(pk, pk1)]
    else:
        f = [1 / v for v in ep]
        sig = esp(f, m - k + 1)
        ratio = sig[m - k] / sig[m - k + 1]
        # P_j(i) = 1 - loo_ratio(f, m-j)[i]  =>  P_k - P_{k-1} = q_{m-k+1} - q_{m-k}
        qa = loo_ratio(f, m - k + 1)
        qb = loo_ratio(f, m - k)
        diff = [a - b for a, b in zip(qa, qb)]
    r = mpmath.exp(alpha / tau) * ratio / e[label]
    L = tau * mpmath.log1p(r)
    sg = r / (1 + r)
    g = []
    it = iter(diff)
    for i in range(n):
        if i == label:
            g.append(-sg / k)
        else:
            g.append(sg * next(it) / k)
    return L, g


def brute_loss(scores, label, k, tau, alpha):
    """Loss by explicit subset enumeration (self-test only; tiny n)."""
    n = len(scores)
    kt = k * mpf(tau)
    e = [mpmath.exp(mpf(v) / kt) for v in scores]
    ep = [e[i] for i in range(n) if i != label]

    def sigma(vals, j):
        return mpmath.fsum(mpmath.fprod(c) for c in itertools.combinations(vals, j))

    r = mpmath.exp(mpf(alpha) / tau) * sigma(ep, k) / (e[label] * sigma(ep, k - 1))
    return tau * mpmath.log1p(r)


def hard_oracle(scores, label, k, alpha):
    """Exact hard loss, pre-hinge value, condition scale, and the rank-k index info."""
    s = [mpf(v) for v in scores]
    rest = sorted(((s[i], i) for i in range(len(s)) if i != label), key=lambda t: -t[0])
    t, idx = rest[k - 1]
    pre = mpf(alpha) + (t - s[label]) / k
    unique = (k - 2 < 0 or rest[k - 2][0] != t) and (k >= len(rest) or rest[k][0] != t)
    scale = mpf(alpha) + abs(t - s[label]) / k
    return max(mpf(0), pre), pre, scale, idx, unique


def selftest(rng):
    """Cross-check the oracle: subset enumeration, numerical derivative, fwd vs reciprocal."""
    worst = {"brute_loss": 0.0, "numdiff_grad": 0.0, "fwd_vs_rec": 0.0}
    with mp.workdps(60):
        for _ in range(40):
            n = int(rng.integers(2, 8))
            k = int(rng.integers(1, n))
            tau = float(10 ** rng.uniform(-1, 1))
            alpha = float(rng.uniform(0, 2))
            sc = [float(v) for v in rng.normal(0, 2, n)]
            y = int(rng.integers(0, n))
            for path in ("fwd", "rec"):
                L, g = smooth_oracle(sc, y, k, tau, alpha, path)
                Lb = brute_loss(sc, y, k, tau, alpha)
                worst["brute_loss"] = max(worst["brute_loss"], float(abs(L - Lb) / abs(Lb)))
            for i in range(n):
                def f(v, i=i):
                    s2 = list(map(mpf, sc))
                    s2[i] = v
                    return smooth_oracle(s2, y, k, tau, alpha)[0]
                with mp.workdps(80):
                    d = mpmath.diff(f, mpf(sc[i]))
                gmax = max(abs(x) for x in g)
                worst["numdiff_grad"] = max(worst["numdiff_grad"], float(abs(d - g[i]) / gmax))
        for _ in range(20):
            n = int(rng.integers(3, 40))
            k = int(rng.integers(1, n))
            tau = float(10 ** rng.uniform(-3, 2))
            sc = [float(v) for v in rng.normal(0, 10 ** rng.uniform(-2, 3), n)]
            y = int(rng.integers(0, n))
            La, ga = smooth_oracle(sc, y, k, tau, 1.0, "fwd")
            Lb, gb = smooth_oracle(sc, y, k, tau, 1.0, "rec")
            gm = max(abs(x) for x in ga)
            err = max(abs(La - Lb) / max(abs(La), mpf(LOSS_FLOOR)),
                      max(abs(a - b) for a, b in zip(ga, gb)) / gm)
            worst["fwd_vs_rec"] = max(worst["fwd_vs_rec"], float(err))
    return worst


# --------------------------------------------------------------------------------------------
# Case generator
# --------------------------------------------------------------------------------------------


def gen_case(seed, idx, precision):
    """One reproducible random case; depends only on (seed, idx, precision)."""
    rng = np.random.default_rng([seed, idx, 0 if precision == "f64" else 1])
    u = rng.random()
    if u < 0.10:
        n = int(round(10 ** rng.uniform(2, 3)))  # 100..1000
    elif u < 0.35:
        n = int(rng.integers(21, 100))
    else:
        n = int(rng.integers(2, 21))
    small = list(range(1, min(10, n - 1) + 1))
    if n - 1 > 10 and rng.random() < 0.25:
        k = n - 1
    else:
        k = int(rng.choice(small))
    tau = float(10 ** rng.uniform(-3, 2))
    alpha = 0.0 if rng.random() < 0.02 else float(rng.uniform(0, 2))
    scale = float(10 ** rng.uniform(-4, 4))
    shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
    z = rng.normal(0, 1, n)
    y = int(rng.integers(0, n))
    if shape == "gaussian":
        s = scale * z
    elif shape == "ties":
        vals = scale * rng.normal(0, 1, int(rng.integers(1, 4)))
        s = vals[rng.integers(0, len(vals), n)]
        if rng.random() < 0.3:
            s[y] = vals.max()  # label tied with the top group
    elif shape == "spike":
        s = scale * z
        j = int(rng.integers(0, n))
        s[j] = s.max() + scale * rng.uniform(5, 50)
        if rng.random() < 0.4:
            y = j
    elif shape == "very_negative":
        s = -scale * rng.uniform(50, 100, n)
        few = rng.choice(n, size=min(n, int(rng.integers(1, k + 2))), replace=False)
        s[few] = scale * rng.normal(0, 1, len(few))
    elif shape == "label_max":
        s = scale * z
        y = int(np.argmax(s))
    elif shape == "label_min":
        s = scale * z
        y = int(np.argmin(s))
    else:  # all_equal
        s = np.full(n, scale * rng.normal())
    if precision == "f32":
        s = s.astype(np.float32).astype(np.float64)
        tau = float(np.float32(tau))
        alpha = float(np.float32(alpha))
    return {"id": idx, "precision": precision, "n": n, "k": k, "tau": tau, "alpha": alpha,
            "scale": scale, "shape": shape, "label": y, "scores": [float(v) for v in s]}


def gen_near_margin(seed, idx, precision, scale_max=1e4):
    """Stress case: the label score sits at the hinge, s_y = s_\\y[k] + k alpha + k tau d with
    |d| <= 3 (so log r = O(1)), at a large score scale and a small tau. Here L is very sensitive
    to the last bits of the scores (relative condition number ~ |s| / (k tau))."""
    rng = np.random.default_rng([seed, idx, 2 if precision == "f64" else 3])
    n = int(rng.integers(3, 51))
    k = int(rng.integers(1, min(10, n - 1) + 1))
    tau = float(10 ** rng.uniform(-3, -1))
    alpha = float(rng.uniform(0, 2))
    scale = float(10 ** rng.uniform(2, math.log10(scale_max)))
    s = scale * rng.normal(0, 1, n)
    y = int(rng.integers(0, n))
    t = sorted((s[i] for i in range(n) if i != y), reverse=True)[k - 1]
    s[y] = t + k * alpha + k * tau * rng.uniform(-3, 3)
    if precision == "f32":
        s = s.astype(np.float32).astype(np.float64)
        tau = float(np.float32(tau))
        alpha = float(np.float32(alpha))
    return {"id": 100000 + idx, "precision": precision, "n": n, "k": k, "tau": tau,
            "alpha": alpha, "scale": scale, "shape": "near_margin", "label": y,
            "scores": [float(v) for v in s]}


def sample_line(case):
    return json.dumps({"scores": case["scores"], "label": case["label"]}) + "\n"


def cli_cmd(binary, case, loss):
    cmd = [binary, "loss", "--loss", loss, "--k", str(case["k"]), "--alpha", repr(case["alpha"]),
           "--precision", case["precision"]]
    if loss == "smooth-svm":
        cmd[6:6] = ["--tau", repr(case["tau"])]
    return cmd


def run_cli(cmd, text):
    p = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def parsed_scores(binary, case):
    """The scores exactly as the CLI parsed them, read back through the hard loss with k = 1,
    alpha = 0: for x >= 0, [0, x, 0] with label 0 gives max(0, x - 0) = x; for x < 0, [x, 0, 0]
    with label 0 gives -x. Both are exact, and outputs print as shortest round-trip text."""
    xs = case["scores"]
    text = "".join(json.dumps({"scores": [0.0, x, 0.0] if x >= 0 else [x, 0.0, 0.0],
                               "label": 0}) + "\n" for x in xs)
    cmd = [binary, "loss", "--loss", "hard-svm", "--k", "1", "--alpha", "0",
           "--precision", case["precision"]]
    rc, out, err = run_cli(cmd, text)
    if rc != 0:
        return None
    vals = [json.loads(line)["loss"] for line in out.splitlines()]
    if case["precision"] == "f32":  # shortest text of an f32: take the f32 it denotes
        vals = [float(np.float32(v)) for v in vals]
    return [float(v) if x >= 0 else -float(v) for x, v in zip(xs, vals)]


def parse_out(line, n):
    """(loss, grad) as floats, or an error string."""
    try:
        o = json.loads(line)
        L, g = o["loss"], o["grad"]
    except Exception as ex:  # noqa: BLE001
        return f"unparsable output: {ex}"
    if len(g) != n:
        return f"gradient has {len(g)} entries, expected {n}"
    vals = [L] + list(g)
    if any(v is None or not isinstance(v, (int, float)) or not math.isfinite(v) for v in vals):
        return "non-finite value (NaN/inf/null) in output"
    return float(L), [float(v) for v in g]


# --------------------------------------------------------------------------------------------
# Per-case checks (run in worker processes)
# --------------------------------------------------------------------------------------------


def check_smooth(args):
    binary, case = args
    t0 = time.time()
    cmd = cli_cmd(binary, case, "smooth-svm")
    rc, out, err = run_cli(cmd, sample_line(case))
    res = {k: case[k] for k in ("id", "precision", "n", "k", "tau", "alpha", "scale", "shape",
                                "label")}
    res.update(kind="smooth", cmd=" ".join(cmd), rc=rc, stderr=err.strip(), stdout=out.strip())
    L_ref, g_ref = smooth_oracle(case["scores"], case["label"], case["k"], case["tau"],
                                 case["alpha"])
    res["L_ref"] = mpmath.nstr(L_ref, 25)
    lines = out.splitlines()
    problem = None
    if rc != 0:
        problem = f"exit status {rc}: {err.strip()}"
    elif len(lines) != 1:
        problem = f"{len(lines)} output lines, expected 1"
    else:
        parsed = parse_out(lines[0], case["n"])
        if isinstance(parsed, str):
            problem = parsed
    if problem is None:
        L, g = parsed
        gmax = max(abs(x) for x in g_ref)
        gdiff = max(abs(mpf(a) - b) for a, b in zip(g, g_ref))
        res["loss_err"] = float(abs(mpf(L) - L_ref) / max(abs(L_ref), mpf(LOSS_FLOOR)))
        res["grad_err"] = float(gdiff / max(gmax, mpf(GRAD_FLOOR)))
        res["grad_err_strict"] = float(gdiff / max(gmax, mpf(STRICT_FLOOR[case["precision"]])))
        res["L"] = L
        # the same errors against the oracle on the scores as the CLI parsed them
        got = parsed_scores(binary, case)
        res["misparsed"] = (-1 if got is None
                            else sum(1 for a, b in zip(got, case["scores"]) if a != b))
        if res["misparsed"] > 0:
            L2, g2 = smooth_oracle(got, case["label"], case["k"], case["tau"], case["alpha"])
            gm2 = max(abs(x) for x in g2)
            res["loss_err_parsed"] = float(abs(mpf(L) - L2) / max(abs(L2), mpf(LOSS_FLOOR)))
            res["grad_err_parsed"] = float(max(abs(mpf(a) - b) for a, b in zip(g, g2))
                                           / max(gm2, mpf(GRAD_FLOOR)))
            res["parsed_scores"] = got
        else:
            res["loss_err_parsed"], res["grad_err_parsed"] = res["loss_err"], res["grad_err"]
        bar = BARS[case["precision"]]
        if res["loss_err"] > bar or res["grad_err"] > bar:
            problem = "error above bar"
    else:
        res["loss_err"] = res["grad_err"] = res["grad_err_strict"] = float("inf")
        res["loss_err_parsed"] = res["grad_err_parsed"] = float("inf")
        res["misparsed"] = -1
    res["problem"] = problem
    res["g_ref_max"] = mpmath.nstr(max(abs(x) for x in g_ref), 10)
    if problem is not None:
        res["g_ref"] = [mpmath.nstr(x, 20) for x in g_ref]
    res["secs"] = time.time() - t0
    return res


def check_hard(args):
    binary, case = args
    cmd = cli_cmd(binary, case, "hard-svm")
    rc, out, err = run_cli(cmd, sample_line(case))
    res = {k: case[k] for k in ("id", "precision", "n", "k", "alpha", "scale", "shape", "label")}
    res.update(kind="hard", cmd=" ".join(cmd), rc=rc, stderr=err.strip(), stdout=out.strip())
    L_ref, pre, scale, idx, unique = hard_oracle(case["scores"], case["label"], case["k"],
                                                 case["alpha"])
    res["L_ref"] = mpmath.nstr(L_ref, 25)
    lines = out.splitlines()
    problem = None
    if rc != 0:
        problem = f"exit status {rc}: {err.strip()}"
    elif len(lines) != 1:
        problem = f"{len(lines)} output lines, expected 1"
    else:
        parsed = parse_out(lines[0], case["n"])
        if isinstance(parsed, str):
            problem = parsed
    res["grad_checked"] = False
    res["grad_err"] = 0.0
    if problem is None:
        L, g = parsed
        d = abs(mpf(L) - L_ref)
        res["loss_err"] = float(d / max(abs(L_ref), mpf(LOSS_FLOOR)))
        res["ulps_of_scale"] = float(d / (scale * mpf(2) ** -52)) if scale > 0 else 0.0
        # subgradient, only where it is unambiguous: unique k-th largest, away from the kink
        k = case["k"]
        if unique and abs(pre) > scale * mpf(2) ** -40:
            gexp = [mpf(0)] * case["n"]
            if pre > 0:
                gexp[case["label"]] = mpf(-1) / k
                gexp[idx] = mpf(1) / k
            res["grad_checked"] = True
            res["grad_err"] = float(max(abs(mpf(a) - b) for a, b in zip(g, gexp)) * k)
        got = parsed_scores(binary, case)
        res["misparsed"] = (-1 if got is None
                            else sum(1 for a, b in zip(got, case["scores"]) if a != b))
        if res["misparsed"] > 0:
            L2 = hard_oracle(got, case["label"], k, case["alpha"])[0]
            res["loss_err_parsed"] = float(abs(mpf(L) - L2) / max(abs(L2), mpf(LOSS_FLOOR)))
            res["parsed_scores"] = got
        else:
            res["loss_err_parsed"] = res["loss_err"]
        res["grad_err_parsed"] = res["grad_err"]
        if res["loss_err"] > HARD_BAR or res["grad_err"] > 1e-15:
            problem = "error above bar"
    else:
        res["loss_err"] = res["grad_err"] = float("inf")
        res["loss_err_parsed"] = res["grad_err_parsed"] = float("inf")
        res["misparsed"] = -1
    res["problem"] = problem
    return res


def batch_check(binary, cases, rng, groups=10, per_group=8):
    """Several samples in one invocation must give exactly the single-sample output lines."""
    mismatches = []
    for gi in range(groups):
        small_k = [c for c in cases if c["k"] <= 3]
        base = small_k[int(rng.integers(0, len(small_k)))]
        members = [c for c in cases if c["n"] > base["k"]]
        size = min(per_group, len(members))
        pick = [members[int(j)] for j in rng.choice(len(members), size, replace=False)]
        text = "".join(sample_line(c) for c in pick)
        cmd = cli_cmd(binary, base, "smooth-svm")
        rc, out, err = run_cli(cmd, text)
        singles = [run_cli(cmd, sample_line(c))[1].strip() for c in pick]
        if rc != 0 or out.splitlines() != singles:
            mismatches.append({"cmd": " ".join(cmd), "ids": [c["id"] for c in pick],
                               "rc": rc, "stderr": err.strip()})
    return mismatches


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def save_failure(res, case, fail_dir):
    os.makedirs(fail_dir, exist_ok=True)
    tag = f"{res['kind']}_{res['precision']}_case{res['id']}"
    path = os.path.join(fail_dir, tag)
    with open(path + ".jsonl", "w") as fh:
        fh.write(sample_line(case))
    with open(path + ".params.json", "w") as fh:
        json.dump(res, fh, indent=1)
    return path


def fmt(x):
    return f"{x:.3e}" if math.isfinite(x) else str(x)


def print_summary(name, results, bar, strict=True):
    fails = [r for r in results if r["problem"] is not None]
    ml = max(r["loss_err"] for r in results)
    mg = max(r["grad_err"] for r in results)
    mlp = max(r["loss_err_parsed"] for r in results)
    mgp = max(r["grad_err_parsed"] for r in results)
    nmis = sum(1 for r in results if r["misparsed"] > 0)
    line = (f"{name:<17} {len(results):>6} {fmt(ml):>11} {fmt(mg):>11} {bar:>8.0e} "
            f"{len(fails):>6} | {nmis:>6} {fmt(mlp):>11} {fmt(mgp):>11}")
    if strict:
        ms = max(r.get("grad_err_strict", 0.0) for r in results)
        nstrict = sum(1 for r in results if r.get("grad_err_strict", 0.0) > bar)
        line += f" | {fmt(ms):>11} {nstrict:>5}"
    print(line)
    return fails


def print_worst(name, results):
    print(f"\nworst 5 {name} (by max(loss_err, grad_err), errors vs the scores as written):")
    key = lambda r: max(r["loss_err"], r["grad_err"])  # noqa: E731
    for r in sorted(results, key=key, reverse=True)[:5]:
        extra = f"tau={r['tau']!r} " if "tau" in r else ""
        print(f"  id={r['id']:<5} n={r['n']:<4} k={r['k']:<4} {extra}alpha={r['alpha']!r} "
              f"scale={r['scale']:.3g} shape={r['shape']} label={r['label']} "
              f"L*={r['L_ref'][:14]} loss_err={fmt(r['loss_err'])} "
              f"grad_err={fmt(r['grad_err'])}"
              + (f" problem={r['problem']}" if r["problem"] else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=3000, help="random cases per precision")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--results", default="/tmp/oracle_check_results.jsonl")
    ap.add_argument("--near-margin", type=int, default=300,
                    help="extra near-hinge stress cases per precision (separate rows)")
    ap.add_argument("--nm-scale-max", type=float, default=1e4,
                    help="near-margin score scale is log-uniform in [1e2, this]")
    ap.add_argument("--fail-dir", default=FAIL_DIR)
    ap.add_argument("--skip-selftest", action="store_true")
    a = ap.parse_args()

    if not os.access(a.bin, os.X_OK):
        sys.exit(f"binary not found or not executable: {a.bin} (build it first; not built here)")
    t0 = time.time()
    rng = np.random.default_rng([a.seed, 999])
    if not a.skip_selftest:
        st = selftest(rng)
        print("oracle self-test (max rel. discrepancy): "
              + ", ".join(f"{k}={v:.1e}" for k, v in st.items()))
        if max(st.values()) > 1e-30:
            sys.exit("oracle self-test failed")

    cases = {p: [gen_case(a.seed, i, p) for i in range(a.cases)] for p in ("f64", "f32")}
    for p in ("f64", "f32"):
        cases["nm_" + p] = [gen_near_margin(a.seed, i, p, a.nm_scale_max) for i in range(a.near_margin)]
    by_key = {(p, c["id"]): c for p in cases for c in cases[p]}
    by_key.update({("hard", c["id"]): c for c in cases["f64"]})
    results = {}
    with ProcessPoolExecutor(a.workers) as ex:
        for p in ("f64", "f32"):
            # big cases first for load balance
            order = sorted(cases[p], key=lambda c: -c["n"] * min(c["k"], c["n"] - c["k"]))
            results[p] = list(ex.map(check_smooth, [(a.bin, c) for c in order], chunksize=4))
            results["nm_" + p] = list(ex.map(check_smooth, [(a.bin, c) for c in cases["nm_" + p]],
                                             chunksize=8))
        results["hard"] = list(ex.map(check_hard, [(a.bin, c) for c in cases["f64"]],
                                      chunksize=16))
    batch_bad = []
    if a.cases >= 50:
        batch_bad = batch_check(a.bin, cases["f64"], rng) + batch_check(a.bin, cases["f32"], rng)

    with open(a.results, "w") as fh:
        for p in results:
            for r in results[p]:
                fh.write(json.dumps(r) + "\n")

    print(f"\nbinary: {a.bin}\nseed={a.seed} cases per precision={a.cases} "
          f"workers={a.workers} mp.dps={mp.dps}")
    nbig = sum(1 for p in ("f64", "f32") for c in cases[p] if c["n"] >= 100)
    nkn = sum(1 for p in ("f64", "f32") for c in cases[p] if c["k"] == c["n"] - 1)
    print(f"smooth cases with n >= 100: {nbig}, with k = n-1: {nkn}")
    print(f"\n{'':<17} {'':>6} {'errors vs the scores as written':^33} {'':>6} | "
          f"{'vs the scores as the CLI parsed them':^30}")
    print(f"{'run':<17} {'count':>6} {'max lossErr':>11} {'max gradErr':>11} {'bar':>8} "
          f"{'fails':>6} | {'cases':>6} {'max lossErr':>11} {'max gradErr':>11} | "
          f"{'gradStrict*':>11} {'>bar':>5}")
    fails = []
    rows = [("smooth f64", "f64", BARS["f64"]), ("smooth f32", "f32", BARS["f32"]),
            ("hard f64", "hard", HARD_BAR), ("near-margin f64", "nm_f64", BARS["f64"]),
            ("near-margin f32", "nm_f32", BARS["f32"])]
    for name, key, bar in rows:
        if results[key]:
            fails += [(key, r) for r in print_summary(name, results[key], bar, key != "hard")]
    print("  'cases' = cases with at least one score the CLI parsed to a different double;\n"
          "  * gradStrict: gradient error with the denominator floor at the smallest normal "
          "number instead of 1e-30 (information only)")
    hard = results["hard"]
    if hard:
        print(f"hard: max error in ulps of (alpha + |s_\\y[k]-s_y|/k): "
              f"{max(r.get('ulps_of_scale', 0.0) for r in hard):.2f}; "
              f"subgradient checked on {sum(r['grad_checked'] for r in hard)} cases, "
              f"max err*k {max(r['grad_err'] for r in hard):.1e}")
    bad_rc = sum(1 for p in results for r in results[p]
                 if r["problem"] and r["problem"] != "error above bar")
    print(f"nonzero exits / non-finite / malformed outputs: {bad_rc}")
    print(f"batch (8 samples per invocation) vs single-sample output mismatches: "
          f"{len(batch_bad)} of {20 if a.cases >= 50 else 0} groups")
    for b in batch_bad:
        print("  ", b)
    for name, key, _ in rows:
        if results[key]:
            print_worst(name, results[key])
    if fails:
        print(f"\nFAILURES ({len(fails)}), saved to {a.fail_dir}/:")
        for p, r in fails:
            path = save_failure(r, by_key[(p, r["id"])], a.fail_dir)
            print(f"  {path}.jsonl  (+ .params.json)  {r['problem']}  "
                  f"lossErr={fmt(r['loss_err'])} gradErr={fmt(r['grad_err'])} "
                  f"(vs parsed: {fmt(r['loss_err_parsed'])}, {fmt(r['grad_err_parsed'])})  "
                  f"cmd: {r['cmd']}")
    print(f"\nper-case results: {a.results}; total time {time.time() - t0:.0f} s")
    return 1 if (fails or batch_bad) else 0


if __name__ == "__main__":
    sys.exit(main())
