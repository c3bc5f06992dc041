import multiprocessing as mp

from jaxdl.experiment.store import SweepStore


def _writer(path, worker, n):
    store = SweepStore(path)
    for i in range(n):
        rid = f"w{worker}-{i}"
        store.add_run(rid, name=rid, group_id=f"g{worker}", config={"seed": i}, config_hash=rid, labels={"w": str(worker)},
                      swept={"seed": i}, run_dir=f"/tmp/{rid}")
        store.set_running(rid)
        records = [{"step": s, "val/loss": 1.0 / s, "val/accuracy": 0.1 * s} for s in (1, 2, 3)]
        store.finish(rid, {"status": "completed", "final": records[-1], "test": {"accuracy": 0.5}}, records)


def test_concurrent_writers_from_processes(tmp_path):
    path = tmp_path / "sweep.db"
    SweepStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = SweepStore(path)
    runs = store.runs()
    assert len(runs) == 60 and store.counts() == {"completed": 60}
    assert all(len(store.metrics(r["id"])) == 3 for r in runs)


def test_rerecording_a_run_replaces_its_metrics_and_keeps_one_row(tmp_path):
    store = SweepStore(tmp_path / "s.db")
    kw = dict(name="a", group_id="g", config={}, config_hash="h", labels={}, swept={"optim.lr": 0.1}, run_dir="/x")
    store.add_run("a", **kw)
    store.finish("a", {"status": "completed"}, [{"step": 1, "val/loss": 2.0}, {"step": 2, "val/loss": 1.0}])
    store.add_run("a", **{**kw, "group_id": "g2"})  # a later sweep regrouped it
    store.finish("a", {"status": "completed"}, [{"step": 1, "val/loss": 2.0}, {"step": 2, "val/loss": 0.5}])
    assert len(store.runs()) == 1 and store.run("a")["group_id"] == "g2"
    assert store.metrics("a") == [{"step": 1, "val/loss": 2.0}, {"step": 2, "val/loss": 0.5}]
    assert store.run("a")["swept"] == {"optim.lr": 0.1}
    store.fail("a", "boom")
    assert store.run("a")["status"] == "failed" and store.run("a")["error"] == "boom"


def test_groups_record_the_fusion_decision(tmp_path):
    store = SweepStore(tmp_path / "s.db")
    store.add_group("g", signature="{}", members=3)
    assert store.groups()[0]["fused"] is None
    store.add_group("g", signature="{}", members=3, fused=False, decision={"reason": "probe: …", "fused": False})
    g = store.groups()[0]
    assert g["fused"] is False and g["decision"]["reason"] == "probe: …"
