"""zoro.torch against PyTorch itself: Adam and AdamW step for step on a small model, param
groups, lr changes, state_dict round trips and loading torch.optim.AdamW's state dict."""

import copy

import pytest

torch = pytest.importorskip("torch")
import zoro.torch  # noqa: E402

STEPS = 5


def model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.Linear(24, 3))


def batches(seed, n=STEPS):
    g = torch.Generator().manual_seed(seed + 7)
    return [(torch.randn(8, 12, generator=g), torch.randn(8, 3, generator=g)) for _ in range(n)]


def train(net, opt, data):
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_params_close(a, b, rtol=1e-5, atol=1e-6):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "ours,theirs,wd",
    [(zoro.torch.AdamW, torch.optim.AdamW, 0.05), (zoro.torch.AdamW, torch.optim.AdamW, 0.0),
     (zoro.torch.Adam, torch.optim.Adam, 0.0), (zoro.torch.Adam, torch.optim.Adam, 0.03)],
)
def test_matches_torch_step_for_step(seed, ours, theirs, wd):
    a, b = model(seed), model(seed)
    opt_a = ours(a.parameters(), lr=1e-2, weight_decay=wd)
    opt_b = theirs(b.parameters(), lr=1e-2, weight_decay=wd)
    data = batches(seed)
    for x, y in data:
        la = train(a, opt_a, [(x, y)])
        lb = train(b, opt_b, [(x, y)])
        assert la == pytest.approx(lb, rel=1e-5)
        assert_params_close(a, b)
    assert all(opt_a.slot_mode(p) == "in_place" for p in a.parameters())
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(opt_a.state[p]["exp_avg"], opt_b.state[q]["exp_avg"],
                                   rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(opt_a.state[p]["exp_avg_sq"], opt_b.state[q]["exp_avg_sq"],
                                   rtol=1e-4, atol=1e-8)


def test_param_groups_and_lr_change(seed):
    a, b = model(seed), model(seed)

    def groups(net):
        return [{"params": net[0].parameters(), "lr": 3e-2, "betas": (0.8, 0.99)},
                {"params": net[2].parameters(), "weight_decay": 0.1, "eps": 1e-6}]

    opt_a = zoro.torch.AdamW(groups(a), lr=1e-3)
    opt_b = torch.optim.AdamW(groups(b), lr=1e-3)
    data = batches(seed, 6)
    train(a, opt_a, data[:3])
    train(b, opt_b, data[:3])
    assert_params_close(a, b)
    for opt in (opt_a, opt_b):  # a schedule: takes effect at the next step
        opt.param_groups[0]["lr"] = 5e-3
        opt.param_groups[1]["lr"] = 2e-2
    before = [p.detach().clone() for p in a.parameters()]
    train(a, opt_a, data[3:])
    train(b, opt_b, data[3:])
    assert_params_close(a, b)
    assert not torch.equal(before[0], a[0].weight)


def test_state_dict_round_trip(seed):
    a, b = model(seed), model(seed)
    opt_a = zoro.torch.AdamW(a.parameters(), lr=1e-2)
    data = batches(seed, 6)
    train(a, opt_a, data[:3])
    saved = copy.deepcopy(opt_a.state_dict())
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["state"][0]["step"].item() == 3
    b.load_state_dict(a.state_dict())
    opt_b = zoro.torch.AdamW(b.parameters(), lr=999.0)
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["lr"] == 1e-2
    train(a, opt_a, data[3:])
    train(b, opt_b, data[3:])
    for p, q in zip(a.parameters(), b.parameters()):  # the same code on the same state
        assert torch.equal(p, q)


def test_loads_a_torch_adamw_state_dict(seed):
    a, b = model(seed), model(seed)
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.02)
    data = batches(seed, 6)
    train(a, opt_a, data[:3])
    b.load_state_dict(a.state_dict())
    opt_b = zoro.torch.AdamW(b.parameters())
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["weight_decay"] == 0.02
    p0 = next(b.parameters())
    assert opt_b.state[p0]["step"].item() == 3  # step counts included
    train(a, opt_a, data[3:])
    train(b, opt_b, data[3:])
    assert_params_close(a, b)
    # and the other way: torch.optim.AdamW loads ours
    opt_c = torch.optim.AdamW(model(seed).parameters())
    opt_c.load_state_dict(opt_b.state_dict())
    assert opt_c.state_dict()["state"][0]["step"].item() == 6


def test_staged_path_bf16_grads_and_chunked_copy_back(seed):
    """The CUDA path's logic on CPU tensors: pinned fp32 master, gradients rounded to bf16 on
    the way down, new weights copied back chunk by chunk."""
    a, b = model(seed), model(seed)
    opt_a = zoro.torch.AdamW(a.parameters(), lr=1e-2, cpu_in_place=False, chunk_elems=100)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
    for x, y in batches(seed, 3):
        train(a, opt_a, [(x, y)])
        opt_b.zero_grad()
        torch.nn.functional.mse_loss(b(x), y).backward()
        for q in b.parameters():  # what crossed the link
            q.grad = q.grad.to(torch.bfloat16).float()
        opt_b.step()
        assert_params_close(a, b)
    p0 = next(a.parameters())
    assert opt_a.slot_mode(p0) == "staged"
    assert torch.equal(opt_a.state[p0]["master_weight"], p0.detach())


def test_bf16_cpu_params_written_in_place(seed):
    a = model(seed).to(torch.bfloat16)
    before = [p.detach().clone() for p in a.parameters()]
    opt = zoro.torch.AdamW(a.parameters(), lr=1e-2)
    for x, y in batches(seed, 2):
        opt.zero_grad()
        ((a(x.bfloat16()).float() - y) ** 2).mean().backward()
        opt.step()
    for p, p0 in zip(a.parameters(), before):
        assert opt.slot_mode(p) == "in_place_half"
        master = opt._slots[p].master.view(p.shape)  # fp32, pinned
        assert torch.equal(p.detach(), master.to(torch.bfloat16))  # rounded, in place
        assert not torch.equal(p.detach(), p0)


def test_unsupported_options_are_refused():
    net = model(0)
    with pytest.raises(ValueError, match="amsgrad"):
        zoro.torch.AdamW(net.parameters(), amsgrad=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        zoro.torch.Adam(net.parameters(), lr=-1.0)


def test_bound_optimizer_on_cpu_tensors_in_place(seed):
    """zoro.adam_step on torch tensors (their data pointers, no copies): the same result as
    on NumPy views of the same values, bf16 gradients and half copies included."""
    np = pytest.importorskip("numpy")
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(300, generator=g)
    grad = torch.randn(300, generator=g).to(torch.bfloat16)
    m, v = torch.zeros(300), torch.zeros(300)
    half = torch.empty(300, dtype=torch.bfloat16)
    pn, mn, vn = p.numpy().copy(), np.zeros(300, np.float32), np.zeros(300, np.float32)
    gn = grad.view(torch.int16).numpy().view(np.uint16).copy()
    config = zoro.AdamConfig(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    zoro.adam_step(config, p, m, v, grad, step=1, half_out=half)
    zoro.adam_step(config, pn, mn, vn, gn, step=1)
    assert torch.equal(p, torch.from_numpy(pn)) and torch.equal(m, torch.from_numpy(mn))
    assert torch.equal(half, p.to(torch.bfloat16))
    with pytest.raises(zoro.InvalidArgument, match="master is not contiguous"):
        zoro.adam_step(config, torch.zeros(600)[::2], m, v, grad, step=1)
    with pytest.raises(TypeError, match="grad has dtype torch.float64"):
        zoro.adam_step(config, p, m, v, grad.double(), step=1)


def test_load_state_dict_refuses_foreign_layouts(seed):
    net = model(seed)
    opt = zoro.torch.AdamW(net.parameters())
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    train(net, sgd, batches(seed, 1))
    with pytest.raises(ValueError, match="no 'step'.*not an Adam/AdamW state dict"):
        opt.load_state_dict(sgd.state_dict())
    two_groups = torch.optim.AdamW([{"params": net[0].parameters()},
                                    {"params": net[2].parameters()}])
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict(two_groups.state_dict())
