"""runtime/ from Python: Config, MemoryPlan, the Engine on the host backend with a checkpoint
round trip, and the mapping of zoro's C++ exceptions to Python exceptions."""

import pytest

np = pytest.importorskip("numpy")
import zoro  # noqa: E402
from zoro import _zoro  # noqa: E402


def test_config_round_trips_through_toml():
    c = zoro.Config(lr=3e-4, dtype="fp16", optimizer="lion", dpu=True, bucket_bytes=1 << 20)
    c.loss_scale.init = 1024.0
    c.validate()
    back = zoro.Config.from_toml(c.to_toml())
    assert back == c and back.fingerprint() == c.fingerprint()
    assert (back.lr, back.dtype, back.optimizer, back.loss_scale.init) == (3e-4, "fp16", "lion", 1024.0)
    assert back.uses_loss_scaling()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(zoro.InvalidArgument, match="optimizer.lrr"):
        zoro.Config.from_toml("[optimizer]\nlrr = 1.0\n")
    with pytest.raises(ValueError, match="precision.dtype"):
        zoro.Config().dtype = "fp8"
    with pytest.raises(zoro.InvalidArgument, match="unknown field 'lrr'"):
        zoro.Config(lrr=1.0)
    bad = zoro.Config(lr=-1.0)
    with pytest.raises(zoro.InvalidArgument, match="lr"):
        bad.validate()
    with pytest.raises(zoro.IoError) as info:
        zoro.Config.from_file(str(tmp_path / "missing.toml"))
    assert isinstance(info.value, OSError) and "missing.toml" in str(info.value)


def test_memory_plan():
    n = 1 << 20
    plan = zoro.MemoryPlan(zoro.PlanOptions(total_elems=n, working="bf16", grad_wire="bf16",
                                            bucket_bytes=1 << 20, bucket_count=2))
    device = plan.total(zoro.Place.DEVICE)
    host = plan.total(zoro.Place.PINNED_HOST)
    assert device == sum(l.bytes for l in plan.lines if l.place == zoro.Place.DEVICE)
    assert device >= 2 * n + 2 * (1 << 20)  # bf16 weights + the ring
    assert host >= 16 * n  # fp32 master, two moments, accumulator
    assert "total" in str(plan).lower()
    plan.check_fits(device, host)
    with pytest.raises(zoro.OutOfMemory) as info:
        plan.check_fits(device - 1, host)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(zoro.InvalidArgument):
        plan.bytes_of("no such category")


def make_engine(rng, shapes):
    config = zoro.Config(device="host:mem=64MiB", dtype="fp32", grad_dtype="fp32", lr=1e-2,
                         clip_norm=0.0, bucket_bytes=4096, bucket_count=2, chunk_elems=1024,
                         cpu_threads=1)
    engine = zoro.Engine(config)
    ids = [engine.add_parameter(name, shape, rng.standard_normal(int(np.prod(shape)))
                                .astype(np.float32)) for name, shape in shapes]
    engine.finalize()
    return engine, ids


def train(engine, ids, grads):
    for step_grads in grads:
        engine.begin_step()
        for p, g in reversed(list(zip(ids, step_grads))):
            engine.set_grad(p, g)
            engine.grads_ready([p])
        report = engine.end_step()
        assert report.boundary and report.applied and not report.overflow
    engine.flush()
    return report


def test_engine_trains_and_checkpoints_round_trip(rng, seed, tmp_path):
    shapes = [("fc.w", [16, 8]), ("fc.b", [8])]
    engine, ids = make_engine(rng, shapes)
    assert [s.name for s in engine.parameters] == ["fc.w", "fc.b"]
    assert engine.find("fc.b") == ids[1]
    assert engine.plan.total(zoro.Place.DEVICE) > 0
    grads = [[rng.standard_normal(128).astype(np.float32), rng.standard_normal(8).astype(np.float32)]
             for _ in range(4)]
    w0 = engine.master(ids[0]).copy()
    report = train(engine, ids, grads[:2])
    assert report.step == 2 and report.grad_norm > 0
    assert not np.array_equal(engine.master(ids[0]), w0)
    np.testing.assert_array_equal(engine.working(ids[0]), engine.master(ids[0]))
    engine.save_checkpoint(str(tmp_path / "ckpt"))

    resumed, rids = make_engine(np.random.default_rng(seed + 1), shapes)
    resumed.load_checkpoint(str(tmp_path / "ckpt"))
    assert resumed.step == 2
    train(engine, ids, grads[2:])
    train(resumed, rids, grads[2:])
    for a, b in zip(ids, rids):  # resuming is exact
        np.testing.assert_array_equal(engine.master(a), resumed.master(b))
        np.testing.assert_array_equal(engine.moment(a, 1), resumed.moment(b, 1))

    with pytest.raises(zoro.IoError):
        resumed.load_checkpoint(str(tmp_path / "nowhere"))
    other, _ = make_engine(rng, [("other", [3])])
    with pytest.raises(zoro.InvalidArgument):
        other.load_checkpoint(str(tmp_path / "ckpt"))


def test_engine_refuses_bad_gradients(rng):
    engine, ids = make_engine(rng, [("w", [4, 4])])
    engine.begin_step()
    with pytest.raises(TypeError):
        engine.set_grad(ids[0], np.zeros(16, np.float64))
    with pytest.raises(zoro.InvalidArgument, match="16"):
        engine.set_grad(ids[0], np.zeros(15, np.float32))
    with pytest.raises(zoro.InvalidArgument, match="ParamId"):
        engine.set_grad(7, np.zeros(16, np.float32))


@pytest.mark.parametrize(
    "kind,builtin",
    [("Error", RuntimeError), ("InvalidArgument", ValueError), ("OutOfMemory", MemoryError),
     ("IoError", OSError), ("BackendError", RuntimeError), ("Unsupported", NotImplementedError)],
)
def test_exception_mapping(kind, builtin):
    message = f"file.cpp:12: {kind} happened (detail)"
    with pytest.raises(getattr(zoro, kind)) as info:
        _zoro._raise_for_test(kind, message)
    assert str(info.value) == message
    assert isinstance(info.value, builtin) and isinstance(info.value, zoro.Error)
    if kind == "BackendError":
        assert (info.value.library, info.value.code) == ("CUDA", 2)


def test_real_errors_from_the_device_layer():
    with pytest.raises(zoro.InvalidArgument, match="bogus"):
        zoro.open_device("bogus")
    if zoro.cuda_device_count() == 0:
        with pytest.raises(zoro.Unsupported):
            zoro.open_device("cuda:0")
    assert zoro.parse_bytes("2KiB") == 2048


def test_engine_with_bf16_wire_gradients(rng):
    config = zoro.Config(device="host:mem=64MiB", dtype="bf16", grad_dtype="bf16", clip_norm=0.0,
                         bucket_bytes=4096, cpu_threads=1, optimizer="adam", weight_decay=0.0)
    engine = zoro.Engine(config)
    w = engine.add_parameter("w", [64], rng.standard_normal(64).astype(np.float32))
    engine.finalize()
    master = engine.master(w).copy()
    engine.begin_step()
    grad = np.full(64, 0x3F80, np.uint16)  # bf16 1.0
    engine.set_grad(w, grad)
    engine.grads_ready([w])
    report = engine.end_step()
    engine.flush()
    assert report.applied and report.grad_norm == pytest.approx(8.0)  # sqrt(64)
    # Adam's first step moves every weight by lr against the gradient's sign.
    np.testing.assert_allclose(engine.master(w), master - config.lr, rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="bfloat16"):
        engine.set_grad(w, np.zeros(64, np.float32))
