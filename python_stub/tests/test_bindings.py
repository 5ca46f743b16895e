"""The CPU optimizers on NumPy arrays: equal to a float32 NumPy transcription of the formulas
in offload/optim/cpu_optimizer.h, in place, chunked; bad arrays refused as documented."""

import pytest

np = pytest.importorskip("numpy")
import zoro  # noqa: E402

N = 1000  # not a multiple of any vector width: the tails are exercised


def fma(a, b, c):
    """fma in float32 via float64: the product of two float32 is exact in float64, so only
    the final sum rounds twice (to float64, then float32); equal to a true fma except in
    rare double-rounding ties, hence the one-ulp tolerance below."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def adam_reference(p, m, v, g, *, lr, beta1, beta2, eps, wd, decoupled, step, grad_scale):
    f = np.float32
    p, m, v = p.copy(), m.copy(), v.copy()
    g = (g * f(grad_scale)).astype(np.float32)
    if not decoupled and wd > 0:
        g = fma(f(wd), p, g)
    # The hyper-parameters are float32 (AdamConfig); the bias corrections are in double.
    lr, beta1, beta2, eps, wd = (float(f(x)) for x in (lr, beta1, beta2, eps, wd))
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    step_size = f(lr / bc1)
    inv_sqrt_bc2 = f(1.0 / np.sqrt(bc2))
    c1, c2 = f(1) - f(beta1), f(1) - f(beta2)
    m = fma(f(beta1), m, c1 * g)
    v = fma(f(beta2), v, (c2 * g) * g)
    d = fma(np.sqrt(v), inv_sqrt_bc2, f(eps))
    if decoupled:
        p = p * f(1.0 - lr * wd)
    p = fma(-step_size, m / d, p)
    return p, m, v


def assert_ulp_close(actual, expected, ulps=2, scale=None):
    """Within `ulps` units in the last place of the result (or of `scale`, the operands'
    magnitude, where a subtraction cancels)."""
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    magnitude = np.maximum(np.abs(actual), np.abs(expected))
    if scale is not None:
        magnitude = np.maximum(magnitude, np.abs(scale))
    spacing = np.spacing(magnitude)
    assert np.all(np.abs(actual - expected) <= ulps * spacing), np.max(
        np.abs(actual - expected) / spacing
    )


def bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even (finite inputs)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("decoupled,wd", [(True, 0.05), (False, 0.0), (False, 0.02)])
def test_adam_matches_reference_over_steps(rng, decoupled, wd):
    p = rng.standard_normal(N).astype(np.float32)
    m = np.zeros(N, np.float32)
    v = np.zeros(N, np.float32)
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, wd=wd, decoupled=decoupled)
    config = zoro.AdamConfig(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                             decoupled_weight_decay=decoupled)
    rp, rm, rv = p.copy(), m.copy(), v.copy()
    for step in range(1, 4):
        g = rng.standard_normal(N).astype(np.float32)
        before = p.copy()
        zoro.adam_step(config, p, m, v, g, step=step, grad_scale=0.5)
        rp, rm, rv = adam_reference(p=before, m=rm, v=rv, g=g, step=step, grad_scale=0.5, **hp)
        assert_ulp_close(m, rm)
        assert_ulp_close(v, rv)
        assert_ulp_close(p, rp, scale=before)
        rp, rm, rv = p.copy(), m.copy(), v.copy()  # each step from zoro's state: no drift


def test_bf16_grad_and_half_out(rng):
    p = rng.standard_normal(N).astype(np.float32)
    m = np.zeros(N, np.float32)
    v = np.zeros(N, np.float32)
    g32 = rng.standard_normal(N).astype(np.float32)
    g16 = bf16_bits(g32)
    half = np.zeros(N, np.uint16)
    p0 = p.copy()
    rp, _, _ = adam_reference(p, m, v, bf16_to_f32(g16), lr=1e-3, beta1=0.9, beta2=0.999,
                              eps=1e-8, wd=0.0, decoupled=True, step=1, grad_scale=1.0)
    zoro.adam_step(zoro.AdamConfig(lr=1e-3, decoupled_weight_decay=True), p, m, v, g16, step=1,
                   half_out=half)
    assert_ulp_close(p, rp, scale=p0)
    np.testing.assert_array_equal(half, bf16_bits(p))  # the rounded copy of the new master


def test_fp16_half_out_and_chunks_reported_in_order(rng):
    p = rng.standard_normal(N).astype(np.float32)
    m, v = np.zeros(N, np.float32), np.zeros(N, np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    half = np.zeros(N, np.float16)
    chunks = []
    zoro.adam_step(zoro.AdamConfig(), p, m, v, g, step=1, half_out=half, begin=100, end=900,
                   chunk_elems=256, on_chunk_done=lambda b, e: chunks.append((b, e)))
    assert chunks == [(100, 356), (356, 612), (612, 868), (868, 900)]
    np.testing.assert_array_equal(half[100:900], p[100:900].astype(np.float16))
    assert not half[:100].any() and not half[900:].any()  # outside the range: untouched


def test_results_do_not_depend_on_chunks_or_threads(rng):
    p = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    outs = []
    for threads, chunk in [(1, 0), (2, 128)]:
        q, m, v = p.copy(), np.zeros(N, np.float32), np.zeros(N, np.float32)
        zoro.adam_step(zoro.AdamConfig(weight_decay=0.1), q, m, v, g, step=3, chunk_elems=chunk,
                       executor=zoro.CpuExecutor(threads=threads, pin_threads=False))
        outs.append((q, m, v))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_adagrad_and_lion_match_reference(rng):
    f = np.float32
    p = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    s = np.full(N, 0.1, np.float32)
    q = p.copy()
    zoro.adagrad_step(zoro.AdagradConfig(lr=0.05, eps=1e-10, weight_decay=0.01), q, s, g, step=1)
    g2 = fma(f(0.01), p, g)
    s_ref = fma(g2, g2, np.full(N, 0.1, np.float32))
    assert_ulp_close(s, s_ref)
    assert_ulp_close(q, fma(f(-0.05), g2 / (np.sqrt(s_ref) + f(1e-10)), p), scale=p)

    m = rng.standard_normal(N).astype(np.float32)
    m0, q = m.copy(), p.copy()
    zoro.lion_step(zoro.LionConfig(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1), q, m, g,
                   step=1)
    c = fma(f(0.9), m0, (f(1) - f(0.9)) * g)
    p_ref = fma(f(-1e-3), np.sign(c), p * f(1.0 - f(1e-3) * f(0.1)))
    assert_ulp_close(q, p_ref, scale=p)
    assert_ulp_close(m, fma(f(0.99), m0, (f(1) - f(0.99)) * g))


def args(rng, n=N):
    return (rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32),
            np.zeros(n, np.float32), rng.standard_normal(n).astype(np.float32))


def test_wrong_dtype_is_a_type_error(rng):
    p, m, v, g = args(rng)
    with pytest.raises(TypeError, match="grad has dtype"):
        zoro.adam_step(zoro.AdamConfig(), p, m, v, g.astype(np.float64), step=1)
    with pytest.raises(TypeError, match="master has dtype float16"):
        zoro.adam_step(zoro.AdamConfig(), p.astype(np.float16), m, v, g, step=1)
    with pytest.raises(TypeError, match="must be a NumPy array"):
        zoro.adam_step(zoro.AdamConfig(), p, m, v, list(g), step=1)


def test_bad_arrays_are_invalid_arguments_and_write_nothing(rng):
    p, m, v, g = args(rng)
    before = p.copy()
    cases = [
        (dict(exp_avg_sq=np.zeros(2 * N, np.float32)[::2]), "exp_avg_sq is not C-contiguous"),
        (dict(grad=g[:-1]), "grad has 999 elements but master has 1000"),
        (dict(exp_avg=m[:10]), "exp_avg has 10 elements"),
        (dict(), "read-only"),
    ]
    ro = m.copy()
    ro.setflags(write=False)
    cases[3][0]["exp_avg"] = ro
    for override, message in cases:
        kw = dict(master=p, exp_avg=m, exp_avg_sq=v, grad=g)
        kw.update(override)
        with pytest.raises(zoro.InvalidArgument, match=message) as info:
            zoro.adam_step(zoro.AdamConfig(), kw["master"], kw["exp_avg"], kw["exp_avg_sq"],
                           kw["grad"], step=1)
        assert isinstance(info.value, ValueError) and isinstance(info.value, zoro.Error)
    np.testing.assert_array_equal(p, before)


def test_misaligned_array_and_bad_values(rng):
    p, m, v, g = args(rng)
    raw = np.zeros(4 * N + 4, np.uint8)
    odd = raw[1:1 + 4 * N].view(np.float32)  # one byte off its natural alignment
    with pytest.raises(zoro.InvalidArgument, match="not aligned"):
        zoro.adam_step(zoro.AdamConfig(), p, m, v, odd, step=1)
    with pytest.raises(zoro.InvalidArgument, match="step=0"):
        zoro.adam_step(zoro.AdamConfig(), p, m, v, g, step=0)
    with pytest.raises(ValueError, match="beta1"):
        zoro.adam_step(zoro.AdamConfig(beta1=1.0), p, m, v, g, step=1)


def test_callback_error_propagates(rng):
    p, m, v, g = args(rng)

    def boom(begin, end):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        zoro.adam_step(zoro.AdamConfig(), p, m, v, g, step=1, chunk_elems=100,
                       on_chunk_done=boom)


def test_pinned_pool_views_without_copies():
    dev = zoro.open_device("host")
    pool = zoro.PinnedPool(dev, budget_bytes=1 << 20, chunk_bytes=1 << 16)
    block = pool.allocate(4096)
    a = np.frombuffer(block, np.float32)
    assert a.size == 1024 and a.ctypes.data == block.data_ptr
    a[:] = 3.0
    assert np.frombuffer(block, np.float32)[7] == 3.0
    assert pool.stats().in_use_bytes == 4096
    del block  # the view keeps the block alive
    assert pool.stats().blocks == 1
    del a
    assert pool.stats().blocks == 0
    with pytest.raises(zoro.OutOfMemory) as info:
        pool.allocate(2 << 20)
    assert isinstance(info.value, MemoryError) and "budget" in str(info.value)
    buf = dev.allocate(zoro.MemoryKind.PINNED_HOST, 256)
    assert isinstance(buf, zoro.HostBuffer) and len(memoryview(buf)) == 256
    assert isinstance(dev.allocate(zoro.MemoryKind.DEVICE, 256), zoro.DeviceBuffer)
