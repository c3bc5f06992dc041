"""The task interface, proven by a two-player toy: two models with alternating updates in one step.

Player ``fit`` regresses the targets; player ``follow`` regresses ``fit``'s current predictions from noisy inputs
(a named RNG stream). A fused population of this task must equal its standalone runs and compile once.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl import models, tasks
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig
from jaxdl.train import Programs, setup, train_group


@tasks.register("toy_pair")
class FollowTheLeader(tasks.Task):
    players = ("fit", "follow")
    schedule = ("fit", "follow")
    rng_streams = ("noise",)

    @classmethod
    def build(cls, cfg, dataset, model, *, dropout=True):
        out = dataset.train.example_spec()[dataset.targets[0]][0][0]
        shape = dataset.input_shape
        net = {p: models.from_linen(nn.Dense(out), p, output="linear", input_shape=shape) for p in cls.players}
        return cls(net, dataset.inputs, dataset.targets)

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        x, y = batch[self.inputs[0]], batch[self.targets[0]]
        mask = batch.get("mask")
        m = jnp.ones(x.shape[:1]) if mask is None else mask
        lead = self.models["fit"].apply({"params": params["fit"]}, x)[0]
        if player == "fit":
            err = jnp.sum(jnp.square(lead - y) * m[:, None])
            name = "loss"
        else:
            noisy = x if rngs is None else x + 0.1 * jax.random.normal(rngs["noise"], x.shape)
            guess = self.models["follow"].apply({"params": params["follow"]}, noisy)[0]
            err = jnp.sum(jnp.square(guess - jax.lax.stop_gradient(lead)) * m[:, None])
            name = "follow"
        weight = jnp.sum(m) * y.shape[-1]
        return err / weight, ({name: (err, weight)}, model_state)

    def metric_names(self):
        return ["loss", "follow"]


@pytest.fixture(scope="module")
def pair_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 2))).astype(np.float32)
    return data_lib.load(DataConfig(name="toy"), source=data_lib.from_arrays(x=x, y=y, name="toy"))


def cfg(i: int, lr: float, lr2: float = 0.05, momentum2: float = 0.5) -> Config:
    """Player ``fit`` uses ``optim`` (lr), player ``follow`` ``optim2`` (lr2, momentum2)."""
    return Config(name=f"pair{i}", seed=i, task="toy_pair", data=DataConfig(name="toy"),
                  optim=OptimConfig(name="sgd", lr=lr, momentum=0.5),
                  optim2=OptimConfig(name="sgd", lr=lr2, momentum=momentum2),
                  train=TrainConfig(batch_size=32, steps=24, eval_every=8, driver="scan", chunk_steps=8,
                                    progress=False, plots=False, checkpoints=False))


def test_two_player_population_equals_standalone_runs_and_compiles_once(tmp_path, pair_data):
    # members differ in both players' numbers: optim2's reach only the second player
    cfgs = [cfg(i, lr, lr2, m2) for i, (lr, lr2, m2) in enumerate([(0.05, 0.05, 0.5), (0.1, 0.01, 0.0),
                                                                    (0.02, 0.2, 0.9)])]
    s = setup(cfgs[0], pair_data)
    assert s.task.players == ("fit", "follow") and set(s.optimizers) == {"fit", "follow"}
    s.fused = True
    programs = Programs(s)
    fused = train_group(cfgs, [tmp_path / f"f{i}" for i in range(3)], fused=True, dataset=pair_data,
                        programs=programs)
    assert programs.runners["scan"].compiled._cache_size() == 1
    for i, c in enumerate(cfgs):
        alone = train_group([c], [tmp_path / f"s{i}"], dataset=pair_data)[0]
        for a, b in zip(jax.tree.leaves(fused[i].state.params), jax.tree.leaves(alone.state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        for split in ("val", "test"):
            for k in ("loss", "follow"):
                np.testing.assert_allclose(fused[i].summary[split][k], alone.summary[split][k], rtol=1e-5)
    # both players learned: the leader fits the targets, the follower tracks the leader
    first = fused[0].summary
    assert set(first["test"]) == {"loss", "follow"} and first["test"]["loss"] < 1.0
    assert set(fused[0].state.params) == {"fit", "follow"}
    assert first["task"] == "toy_pair"


def test_players_update_in_schedule_order_with_their_own_streams(pair_data):
    s = setup(cfg(0, 0.1), pair_data)
    keys = s.task.rngs(jax.random.PRNGKey(3))
    assert set(keys) == {"noise"}
    assert not np.array_equal(jax.random.key_data(keys["noise"]), jax.random.key_data(jax.random.PRNGKey(3)))
    from jaxdl.train import initial_state

    state = initial_state(s)
    batch = pair_data.train.batch(np.arange(32))
    new, metrics = jax.jit(s.train_step)(state, batch, s.hparams)
    assert {"fit/loss", "follow/loss", "fit/grad_norm", "follow/grad_norm", "loss", "lr", "finite",
            "stats"} <= set(metrics)
    assert set(metrics["stats"]) == {"loss", "follow"} and bool(metrics["finite"])
    assert int(new.step) == 1 and set(new.opt_state) == {"fit", "follow"}


def test_second_player_uses_optim2(pair_data):
    """One step: the first player moves by optim.lr, the second by optim2.lr (SGD, no momentum)."""
    from jaxdl.train import initial_state

    moved = {}
    for lr2 in (0.01, 0.03):
        c = cfg(0, 0.1, lr2, 0.0)
        s = setup(c, pair_data)
        assert float(s.hparams["optim2.lr"]) == pytest.approx(lr2)
        state = initial_state(s)
        batch = pair_data.train.batch(np.arange(32))
        new, metrics = jax.jit(s.train_step)(state, batch, s.hparams)
        assert float(metrics["follow/lr"]) == pytest.approx(lr2) and float(metrics["fit/lr"]) == pytest.approx(0.1)
        moved[lr2] = {p: np.asarray(new.params[p]["kernel"] - state.params[p]["kernel"]) for p in ("fit", "follow")}
    np.testing.assert_allclose(moved[0.01]["fit"], moved[0.03]["fit"], rtol=1e-6)
    np.testing.assert_allclose(3 * moved[0.01]["follow"], moved[0.03]["follow"], rtol=1e-4, atol=1e-7)


def test_optim2_errors_name_the_key(pair_data):
    from jaxdl.errors import ConfigError
    from jaxdl.train.setup import setup as _setup

    bad = cfg(0, 0.1, -1.0)
    with pytest.raises(ConfigError, match=r"optim2\.lr: expected a positive learning rate"):
        _setup(bad, pair_data)
    single = Config(name="one", data=DataConfig(name="toy"), optim2=OptimConfig(lr=0.5),
                    train=TrainConfig(batch_size=32, steps=2, progress=False, plots=False, checkpoints=False))
    with pytest.raises(ConfigError, match=r"optim2 configures the second player .* task 'regression' has one player"):
        _setup(single, pair_data)
