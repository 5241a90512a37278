"""The shared training loop's weight average (``fit(ema_decay=...)``), against a float64 recurrence."""
import torch

from naskd.train import fit

STEPS_PER_EPOCH, EPOCHS, DECAY = 3, 2, 0.7


def _run(run_dir, *, stop_after=None, resume=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs = torch.randn(STEPS_PER_EPOCH * EPOCHS, 4, 3, generator=torch.Generator().manual_seed(1))
    raw_weights, seen, saved = [], [], []

    def loss_fn(batch, progress):
        return ((model(batch["x"]) - 1.0) ** 2).mean(), {}

    def make_batch(i):
        return {"x": xs[i]}

    def evaluate():
        w = model.weight.detach().clone()
        seen.append(w)
        return {"score": float(-(w.sum() - 1.0).abs())}

    def on_best(metrics):
        saved.append(model.weight.detach().clone())

    def step_hook(*_):
        raw_weights.append(model.weight.detach().double().clone())

    opt.register_step_post_hook(step_hook)
    result = fit(model=model, optimizer=opt, scheduler=None, epochs=EPOCHS,
                 batches_for_epoch=lambda e: list(range(e * STEPS_PER_EPOCH, (e + 1) * STEPS_PER_EPOCH)),
                 make_batch=make_batch, loss_fn=loss_fn, evaluate=evaluate, main_metric="score", run_dir=run_dir,
                 device=torch.device("cpu"), on_best=on_best, resume=resume, stop_after_steps=stop_after,
                 checkpoint_every=1, grad_clip=None, ema_decay=DECAY)
    return model, result, raw_weights, seen, saved


def test_fit_scores_and_saves_the_weight_average(tmp_path):
    model, result, raw, seen, saved = _run(tmp_path)
    assert len(raw) == STEPS_PER_EPOCH * EPOCHS
    # the average by hand, float64: the first step copies the weights, then avg <- d avg + (1 - d) w
    avg, averages = None, []
    for w in raw:
        avg = w.clone() if avg is None else DECAY * avg + (1 - DECAY) * w
        averages.append(avg)
    # each epoch's end: the raw weights are scored first, then the average (which is what counts)
    for epoch in range(EPOCHS):
        at = (epoch + 1) * STEPS_PER_EPOCH - 1
        torch.testing.assert_close(seen[2 * epoch].double(), raw[at], rtol=0, atol=1e-7)
        torch.testing.assert_close(seen[2 * epoch + 1].double(), averages[at], rtol=0, atol=1e-6)
        h = result.state.history[epoch]
        assert abs(h["score"] + abs(float(averages[at].sum()) - 1.0)) < 1e-5
        assert abs(h["raw_score"] + abs(float(raw[at].sum()) - 1.0)) < 1e-5
    # what on_best saw is an average, never the raw weights; training goes on from the raw weights
    assert saved and all(min(float((s.double() - a).abs().max()) for a in averages) < 1e-6 for s in saved)
    assert not torch.allclose(averages[-1], raw[-1])
    torch.testing.assert_close(model.weight.detach().double(), raw[-1], rtol=0, atol=0)


def test_fit_weight_average_survives_resume(tmp_path):
    _, full, _, _, _ = _run(tmp_path / "full")
    _, part, _, _, _ = _run(tmp_path / "part", stop_after=4)      # stopped inside the second epoch
    assert part.stopped
    model, resumed, _, seen, _ = _run(tmp_path / "part", resume=True)
    assert [h["score"] for h in resumed.state.history] == [h["score"] for h in full.state.history]
    assert [h["raw_score"] for h in resumed.state.history] == [h["raw_score"] for h in full.state.history]


def test_adamw_is_fused_and_updates_as_the_reference(tmp_path):
    """naskd's AdamW takes torch's fused kernel on the CPU and moves the weights as the default implementation
    does; a checkpoint of the unfused optimizer (a run started before naskd fused it) resumes unfused, on its
    own trajectory."""
    from naskd.train import adamw

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(24, 3))

    x = torch.randint(0, 50, (16, 3))

    def train(m, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()

    fused_m, ref_m = model(), model()
    fused = adamw(fused_m.parameters(), lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(ref_m.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    train(fused_m, fused, 20)
    train(ref_m, ref, 20)
    for a, b, start in zip(fused_m.parameters(), ref_m.parameters(), model().parameters()):
        assert (a - start).abs().max() > 1e-3                  # the weights moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # resume: the reference optimizer's state in a fused one, then both go on alike
    torch.save(ref.state_dict(), tmp_path / "opt.pt")
    again = adamw(fused_m.parameters(), lr=1e-2, weight_decay=0.1)
    again.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert not again.param_groups[0]["fused"]                # the checkpoint's settings win
    train(fused_m, again, 5)
    train(ref_m, ref, 5)
    for a, b in zip(fused_m.parameters(), ref_m.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fit_keep_last_saves_every_epoch_even_when_it_scores_worse(tmp_path):
    """keep="last": on_best after every epoch and best_metrics the last epoch's, whatever the scores; the
    default keeps the best only (scores made to fall: the first epoch stays best)."""
    from naskd.train import fit

    def run(keep, d):
        d.mkdir()
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        scores, saved = iter([0.9, 0.5, 0.1]), []
        res = fit(model=model, optimizer=opt, scheduler=None, epochs=3, batches_for_epoch=lambda e: [0],
                  make_batch=lambda i: {"x": torch.ones(1, 2)},
                  loss_fn=lambda b, p: (model(b["x"]).sum(), {}), evaluate=lambda: {"score": next(scores)},
                  main_metric="score", run_dir=d, device=torch.device("cpu"),
                  on_best=lambda m: saved.append(m["score"]), grad_clip=None, keep=keep)
        return res, saved

    res, saved = run("last", tmp_path / "last")
    assert saved == [0.9, 0.5, 0.1] and res.best_metrics["score"] == 0.1 and res.state.best_epoch == 2
    res, saved = run("best", tmp_path / "best")
    assert saved == [0.9] and res.best_metrics["score"] == 0.9 and res.state.best_epoch == 0


def test_fit_passes_where_training_stands_and_a_resume_sees_the_same(tmp_path, capsys):
    """loss_fn and before_step get a Progress record (no loop state in the batch); after a stop at step 4
    the resumed run continues with the records an uninterrupted run has."""
    from naskd.records import Progress

    def run(run_dir, stop=None, resume=False):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        seen, before = [], []

        def loss_fn(batch, progress):
            assert set(batch) == {"x"}
            seen.append(progress)
            return model(batch["x"]).pow(2).mean(), {}

        fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None, epochs=2,
            batches_for_epoch=lambda e: [0, 1, 2], make_batch=lambda i: {"x": torch.ones(3, 2) * i},
            loss_fn=loss_fn, before_step=lambda b, p: before.append(p), evaluate=lambda: {"score": 0.0},
            main_metric="score", run_dir=run_dir, device=torch.device("cpu"), resume=resume,
            stop_after_steps=stop, checkpoint_every=1, grad_clip=None)
        return seen, before

    full, before = run(tmp_path / "a")
    assert full == before == [Progress(epoch=e, epochs=2, step=3 * e + i, fraction=(3 * e + i) / 6)
                              for e in range(2) for i in range(3)]
    part, _ = run(tmp_path / "b", stop=4)
    capsys.readouterr()
    rest, _ = run(tmp_path / "b", resume=True)
    assert part + rest == full
    # a resume says where it continues (step 4 = the second epoch's second step)
    assert "resumed from checkpoint.pt at step 4 (epoch 2 of 2, step 1 in it;" in capsys.readouterr().out
