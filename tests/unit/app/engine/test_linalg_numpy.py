"""app/engine/linalg.h against numpy.linalg (eigh, solve, lstsq, svd) through linalg_driver.

Random float64 matrices made here are written as .npy, the driver runs one operation on them, and
its outputs are compared with numpy's. Eigen- and singular vectors are compared up to sign where
their value is simple, and as subspaces (projectors; U_c Vt_c for a singular value cluster) where it
is repeated. Tolerances follow perturbation theory: backward-stable results agree to about
n·eps·|A| in values and n·eps·|A|/gap in vectors (cond·eps for solves). Bad input must exit 2
with a message naming it. One line per check, then "N passed, M failed".
Usage: test_linalg_numpy.py LINALG_DRIVER     (exit 77, a meson skip, without numpy)
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is not installed for", sys.executable, "- skipping")
    sys.exit(77)

DRIVER = sys.argv[1]
# The matrices are small: one OpenMP thread per driver run. (About a hundred short runs, each
# starting a spinning OpenMP pool, crawl when the suite runs tests side by side on few cores;
# test_linalg.c covers the threaded path.)
DRIVER_ENV = dict(os.environ, OMP_NUM_THREADS="1")
EPS = np.finfo(np.float64).eps
rng = np.random.default_rng(20240607)
passed = failed = 0


def check(cond, what):
    global passed, failed
    print(("ok   " if cond else "FAIL ") + what)
    if cond:
        passed += 1
    else:
        failed += 1


def run(op, arrays, param=None):
    """Returns (outputs by name, None) or (None, (exit status, stderr))."""
    with tempfile.TemporaryDirectory(prefix="lmwb-linalg-") as d:
        for name, a in arrays.items():
            np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(a, dtype=np.float64))
        args = [DRIVER, op, d] + ([repr(float(param))] if param is not None else [])
        p = subprocess.run(args, capture_output=True, text=True, env=DRIVER_ENV)
        if p.returncode != 0:
            return None, (p.returncode, p.stderr.strip())
        return {f[:-4]: np.load(os.path.join(d, f)) for f in os.listdir(d)
                if f.endswith(".npy") and f[:-4] not in arrays}, None


def ran(what, out, err):
    if out is None:
        check(False, f"{what}: driver failed: exit {err[0]}: {err[1]}")
    return out is not None


def clusters(vals, tol):
    """Runs of sorted values closer than tol: list of index ranges."""
    order = np.argsort(vals)
    groups, start = [], 0
    for i in range(1, len(vals) + 1):
        if i == len(vals) or vals[order[i]] - vals[order[i - 1]] > tol:
            groups.append(order[start:i])
            start = i
    return groups


def gap_to_rest(vals, idx):
    rest = np.delete(vals, idx)
    if rest.size == 0:
        return np.inf
    return np.min(np.abs(rest[:, None] - vals[idx][None, :]))


# ---- eigh ---------------------------------------------------------------------------------

def random_sym(n):
    g = rng.standard_normal((n, n))
    return g + g.T


def with_spectrum(vals):
    q, _ = np.linalg.qr(rng.standard_normal((len(vals), len(vals))))
    a = (q * vals) @ q.T
    return (a + a.T) / 2


def eigh_case(name, a):
    n = a.shape[0]
    out, err = run("eigh", {"A": a})
    if not ran(f"eigh {name}", out, err):
        return
    w, v = out["w"], out["V"]
    w_np, v_np = np.linalg.eigh(a)
    norm = max(np.linalg.norm(a, 2), np.finfo(float).tiny)
    base = 16 * n * EPS * norm
    ok_shape = w.shape == (n,) and v.shape == (n, n)
    dw = np.max(np.abs(w - w_np)) if ok_shape else np.inf
    check(ok_shape and np.all(np.diff(w) >= 0) and dw <= base,
          f"eigh {name} n={n}: eigenvalues ascending, within {dw:.2g} of numpy (tol {base:.2g})")
    if not ok_shape:
        return
    rec = np.max(np.abs((v * w) @ v.T - a)) / norm
    orth = np.max(np.abs(v.T @ v - np.eye(n)))
    check(rec <= 16 * n * EPS and orth <= 16 * n * EPS,
          f"eigh {name} n={n}: |A - V diag(w) V^T|/|A| = {rec:.2g}, |V^T V - I| = {orth:.2g}")
    # Vectors: a simple eigenvalue's column up to sign; a cluster's projector.
    worst, worst_tol, n_clusters = 0.0, np.inf, 0
    for idx in clusters(w_np, 1e-8 * norm):
        tol = 1e-13 + base / gap_to_rest(w_np, idx)
        if len(idx) == 1:
            j = idx[0]
            d = min(np.max(np.abs(v[:, j] - v_np[:, j])), np.max(np.abs(v[:, j] + v_np[:, j])))
        else:
            n_clusters += 1
            p, p_np = v[:, idx] @ v[:, idx].T, v_np[:, idx] @ v_np[:, idx].T
            d = np.max(np.abs(p - p_np))
        if d / tol >= worst / worst_tol:
            worst, worst_tol = d, tol
    check(worst <= worst_tol, f"eigh {name} n={n}: eigenvectors match numpy up to sign "
          f"({n_clusters} repeated eigenvalues as subspaces), worst {worst:.2g} (tol {worst_tol:.2g})")
    out, err = run("eigvals", {"A": a})
    if ran(f"eigvals {name}", out, err):
        d = np.max(np.abs(out["w"] - w_np))
        check(d <= base, f"eigh {name} n={n}: eigenvalues only within {d:.2g} of numpy")


eigh_case("1x1", np.array([[-2.5]]))
for n in (2, 5, 50, 200):
    eigh_case("random", random_sym(n))
eigh_case("repeated", with_spectrum(np.repeat([-3.0, 0.5, 1.0, 4.0], [6, 1, 9, 4])))
eigh_case("rank-2 PSD", (lambda f: f @ f.T)(rng.standard_normal((12, 2))))
eigh_case("identity", np.eye(7))
eigh_case("graded", with_spectrum(np.logspace(-12, 3, 16)))


# ---- solve --------------------------------------------------------------------------------

def random_spd(n, shift=1.0):
    g = rng.standard_normal((n, n))
    return g @ g.T + shift * np.eye(n)


def solve_case(name, a, b, ridge=0.0):
    n = a.shape[0]
    out, err = run("solve", {"A": a, "B": b}, ridge)
    if not ran(f"solve {name}", out, err):
        return
    m = a + ridge * np.eye(n)
    x_np = np.linalg.solve(m, b)
    cond = np.linalg.cond(m)
    tol = 16 * n * EPS * cond
    x = out["X"]
    d = np.max(np.abs(x - x_np)) / np.max(np.abs(x_np)) if x.shape == x_np.shape else np.inf
    check(d <= tol, f"solve {name} n={n} nrhs={b.shape[1]} ridge={ridge:g}: within {d:.2g} of "
          f"numpy.linalg.solve (tol {tol:.2g}, cond {cond:.2g})")
    # dpocon underestimates |A^-1|_1, so its 1/cond_1 is at least the truth, within a factor of a
    # few (0.999: numpy's own inverse is only cond·eps accurate).
    r, r_np = float(out["rcond"]), 1 / np.linalg.cond(m, 1)
    check(r_np * 0.999 <= r <= r_np * 10,
          f"solve {name} n={n}: rcond estimate {r:.3g} vs 1/cond_1 {r_np:.3g}")


def refused(op, arrays, param, fragment, what):
    out, err = run(op, arrays, param)
    ok = out is None and err[0] == 2 and fragment in err[1]
    check(ok, f"{what}: exit 2 with '{fragment}'" + ("" if ok else f" (got {err})"))


solve_case("1x1", np.array([[4.0]]), np.array([[2.0]]))
for n, r in ((3, 1), (40, 4), (150, 2)):
    solve_case("random SPD", random_spd(n), rng.standard_normal((n, r)))
solve_case("rank-5 PSD + ridge", (lambda f: f @ f.T)(rng.standard_normal((30, 5))),
           rng.standard_normal((30, 2)), ridge=0.25)
solve_case("Hilbert", 1 / (np.arange(8)[:, None] + np.arange(8)[None, :] + 1.0), np.eye(8))
refused("solve", {"A": np.array([[1.0, 2.0], [2.0, 1.0]]), "B": np.ones((2, 1))}, 0.0,
        "not positive definite (pivot 2 of 2", "solve indefinite")
refused("solve", {"A": (lambda f: f @ f.T)(rng.standard_normal((6, 2))), "B": np.ones((6, 1))}, 0.0,
        "cholesky_solve: A is", "solve singular covariance")
refused("solve", {"A": np.array([[1.0, 2.0], [0.0, 1.0]]), "B": np.ones((2, 1))}, 0.0,
        "not symmetric", "solve non-symmetric")
refused("solve", {"A": np.eye(2), "B": np.array([[1.0], [np.nan]])}, 0.0, "B[1,0] is NaN", "solve NaN")
refused("solve", {"A": np.eye(2), "B": np.ones((2, 1))}, -1.0, "ridge must be finite and >= 0",
        "solve negative ridge")


# ---- lstsq --------------------------------------------------------------------------------

def lstsq_case(name, a, b, rcond=None):
    m, n = a.shape
    out, err = run("lstsq", {"A": a, "B": b}, -1.0 if rcond is None else rcond)
    if not ran(f"lstsq {name}", out, err):
        return
    x_np, _, rank_np, s = np.linalg.lstsq(a, b, rcond=rcond)
    # Least squares is sensitive to cond² (of the kept part of the spectrum).
    cond = s[0] / s[rank_np - 1] if rank_np > 0 else 1.0
    tol = 64 * max(m, n) * EPS * cond * cond + 1e-14
    x = out["X"]
    d = np.max(np.abs(x - x_np)) / max(np.max(np.abs(x_np)), 1e-300) if x.shape == x_np.shape else np.inf
    rank = int(out["rank"])
    check(d <= tol and rank == rank_np,
          f"lstsq {name} {m}x{n} nrhs={b.shape[1]}: rank {rank} (numpy {rank_np}), within {d:.2g} of "
          f"numpy.linalg.lstsq (tol {tol:.2g})")


for m, n, r in ((30, 5, 1), (5, 30, 3), (20, 20, 2), (1, 7, 1), (7, 1, 2), (1, 1, 1)):
    lstsq_case("random", rng.standard_normal((m, n)), rng.standard_normal((m, r)))
low = rng.standard_normal((25, 5)) @ rng.standard_normal((5, 12))
lstsq_case("rank 5", low, rng.standard_normal((25, 3)))
lstsq_case("rank 5 transposed", low.T, rng.standard_normal((12, 2)))
graded = with_spectrum(np.array([1.0, 0.1, 1e-4, 1e-6, 0.0]))
lstsq_case("rcond 1e-3", graded, rng.standard_normal((5, 1)), rcond=1e-3)
lstsq_case("zero", np.zeros((4, 3)), rng.standard_normal((4, 1)))
refused("lstsq", {"A": np.array([[1.0, np.inf]]), "B": np.ones((1, 1))}, -1.0, "A[0,1] is +Inf",
        "lstsq Inf")


# ---- svd ----------------------------------------------------------------------------------

def svd_case(name, a):
    m, n = a.shape
    k = min(m, n)
    out, err = run("svd", {"A": a})
    if not ran(f"svd {name}", out, err):
        return
    u, s, vt = out["U"], out["S"], out["Vt"]
    u_np, s_np, vt_np = np.linalg.svd(a, full_matrices=False)
    norm = max(s_np[0], np.finfo(float).tiny)
    base = 16 * max(m, n) * EPS * norm
    ok_shape = u.shape == (m, k) and s.shape == (k,) and vt.shape == (k, n)
    ds = np.max(np.abs(s - s_np)) if ok_shape else np.inf
    check(ok_shape and np.all(np.diff(s) <= 0) and ds <= base,
          f"svd {name} {m}x{n}: shapes, S descending, within {ds:.2g} of numpy (tol {base:.2g})")
    if not ok_shape:
        return
    rec = np.max(np.abs((u * s) @ vt - a)) / norm
    check(rec <= 16 * max(m, n) * EPS, f"svd {name} {m}x{n}: |A - U S Vt|/|A| = {rec:.2g}")
    worst, worst_tol = 0.0, np.inf
    for idx in clusters(s_np, 1e-8 * norm):
        tol = 1e-13 + base / gap_to_rest(s_np, idx)
        if len(idx) == 1 and s_np[idx[0]] > 1e-8 * norm:
            j = idx[0]
            sign = 1.0 if u[:, j] @ u_np[:, j] >= 0 else -1.0
            d = max(np.max(np.abs(sign * u[:, j] - u_np[:, j])), np.max(np.abs(sign * vt[j] - vt_np[j])))
        elif s_np[idx[0]] > 1e-8 * norm:  # a repeated value: U_c Vt_c is unique
            d = np.max(np.abs(u[:, idx] @ vt[idx] - u_np[:, idx] @ vt_np[idx]))
        else:  # zero singular values: only the null space of the smaller side is determined
            d = np.max(np.abs(u[:, idx] @ u[:, idx].T - u_np[:, idx] @ u_np[:, idx].T)) if m == k \
                else np.max(np.abs(vt[idx].T @ vt[idx] - vt_np[idx].T @ vt_np[idx]))
        if d / tol >= worst / worst_tol:
            worst, worst_tol = d, tol
    check(worst <= worst_tol,
          f"svd {name} {m}x{n}: singular vectors match numpy (up to sign, subspaces where repeated), "
          f"worst {worst:.2g} (tol {worst_tol:.2g})")
    out, err = run("svdvals", {"A": a})
    if ran(f"svdvals {name}", out, err):
        d = np.max(np.abs(out["S"] - s_np))
        check(d <= base, f"svd {name} {m}x{n}: singular values only within {d:.2g} of numpy")


for m, n in ((12, 4), (4, 12), (9, 9), (1, 1), (1, 6), (6, 1), (60, 40)):
    svd_case("random", rng.standard_normal((m, n)))
q1, _ = np.linalg.qr(rng.standard_normal((10, 6)))
q2, _ = np.linalg.qr(rng.standard_normal((7, 6)))
svd_case("repeated", (q1 * np.array([3.0, 3.0, 1.0, 1.0, 1.0, 0.5])) @ q2.T)
svd_case("rank 2", rng.standard_normal((8, 2)) @ rng.standard_normal((2, 5)))
refused("svd", {"A": np.array([[np.nan, 1.0]])}, None, "svd: A[0,0] is NaN", "svd NaN")
refused("eigh", {"A": np.zeros((0, 0)).reshape(0, 0)}, None, "at least 1", "eigh empty")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
