"""Real architectures: keras.applications, a Transformer encoder block, several optimizers in one step."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from rich.console import Console

from gradscope import GradientMonitor
from gradscope.model_layers import watched_layers

# Every test here builds and trains a model: seconds each, ResNet50 and MobileNetV2 about 15 s of CPU each.
pytestmark = pytest.mark.slow


def _weights(model):
    return [v.numpy() for v in model.variables]


def _step0_against_tape(model, x, y, loss="sparse_categorical_crossentropy", **options):
    """One recorded fit step, and the per-layer gradient norms of an
    independent GradientTape at the same weights on the same batch.

    The tape runs in a tf.function, as fit's step does: batch normalisation
    over 2 samples makes these networks so ill-conditioned that eager and
    graph kernels, which round differently, disagree by far more than 1e-5.
    """
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    before = _weights(model)
    monitor = GradientMonitor(verbose=0, **options)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False, callbacks=[monitor])
    for v, w in zip(model.variables, before, strict=True):
        v.assign(w)
    loss_fn = keras.losses.get(loss)

    @tf.function
    def tape_step():
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss_fn(y, model(x, training=True)))
        return value, tape.gradient(value, model.trainable_variables)

    value, grads = tape_step()
    expected = [np.sqrt(sum(np.sum(np.square(grads[i].numpy().astype(np.float64))) for i in s.var_indices))
                for s in watched_layers(model)]
    return monitor.history, np.array(expected), float(value)


@pytest.mark.parametrize("application", ["ResNet50", "MobileNetV2"])
def test_applications_record_step0_like_a_gradient_tape(application):
    model = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32"), np.array([3, 7])
    # Without the activation statistics: they cost as much as the rest of the
    # step to trace, and reading a layer's output keeps TensorFlow from fusing
    # it with the next op, which rounds differently; in networks this
    # ill-conditioned that alone moves the gradients by more than 1e-5.
    history, expected, loss = _step0_against_tape(model, x, y, activation_stats=False)
    assert len(history) == 1
    np.testing.assert_allclose(history["grad_norm"][0], expected, rtol=1e-5)
    assert history.scalars["loss"][0] == pytest.approx(loss, rel=1e-5)
    info = {i["name"]: i for i in history.layer_info}
    # Every batch norm is in the table, in call order (the stem's right after its convolution).
    norms = [n for n in history.layers if info[n]["normalization"]]
    assert len(norms) == sum(isinstance(la, keras.layers.BatchNormalization) for la in model.layers)
    stem = ("conv1_conv", "conv1_bn") if application == "ResNet50" else ("Conv1", "bn_Conv1")
    assert history.layers.index(stem[1]) == history.layers.index(stem[0]) + 1
    if application == "ResNet50":
        # conv, batch norm, ReLU: the ReLU's output is measured, under the convolution's name.
        assert info["conv2_block1_1_conv"]["activation_layer"] == "conv2_block1_1_relu"
        assert info["conv2_block1_1_conv"]["activation"] == "relu"
        # The blocks are residual branches; the stem and the classifier are the main path.
        main = [n for n in history.layers if info[n]["main_path"]]
        assert main == ["conv1_conv", "conv1_bn", "predictions"]
    else:
        assert (info["Conv1"]["activation"], info["Conv1"]["activation_layer"]) == ("relu6", "Conv1_relu")
        # block_2 adds its input back (a residual branch); block_1 does not.
        assert [info[n]["main_path"] for n in ("Conv1", "block_1_expand", "block_2_expand")] == [True, True, False]


class EncoderBlock(keras.layers.Layer):
    """A post-norm Transformer encoder block: attention and a feed-forward network, each with a skip."""

    def __init__(self, dim=8, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.mha = keras.layers.MultiHeadAttention(heads, dim // heads, name="mha")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.ffn1 = keras.layers.Dense(2 * dim, name="ffn1")
        self.act = keras.layers.Activation("gelu", name="gelu")
        self.ffn2 = keras.layers.Dense(dim, name="ffn2")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")

    def call(self, x):
        x = self.norm1(x + self.mha(x, x))
        return self.norm2(x + self.ffn2(self.act(self.ffn1(x))))


def test_a_transformer_encoder_block_records_step0_like_a_gradient_tape():
    x_in = keras.Input((5, 8))
    h = EncoderBlock(name="encoder")(keras.layers.Dense(8, name="embed")(x_in))
    model = keras.Model(x_in, keras.layers.Dense(3, activation="softmax", name="head")(
        keras.layers.GlobalAveragePooling1D()(h)))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 5, 8)).astype("float32"), np.array([0, 2])
    history, expected, _ = _step0_against_tape(model, x, y)
    np.testing.assert_allclose(history["grad_norm"][0], expected, rtol=1e-5)
    assert history.layers == ["embed", "encoder/mha/query", "encoder/mha/key", "encoder/mha/value",
                              "encoder/mha/attention_output", "encoder/norm1", "encoder/ffn1", "encoder/ffn2",
                              "encoder/norm2", "head"]
    info = {i["name"]: i for i in history.layer_info}
    assert info["encoder/ffn1"]["activation_layer"] == "gelu"
    main = [n for n in history.layers if info[n]["main_path"]]
    assert main == ["embed", "encoder/norm1", "encoder/norm2", "head"]
    # Every layer's output and gradient is measured, the attention's inner layers included.
    assert np.isfinite(history["backprop"][0]).all()


class TwoHeads(keras.Model):
    """An actor and a critic on one batch, each updated by its own optimizer; model.optimizer is never used."""

    def __init__(self):
        super().__init__()
        self.actor = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh", name="a1"),
                                       keras.layers.Dense(2, name="a2")], name="actor")
        self.critic = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu", name="c1"),
                                        keras.layers.Dense(1, name="c2")], name="critic")

    def compile(self, actor_optimizer, critic_optimizer):
        super().compile()
        self.actor_optimizer, self.critic_optimizer = actor_optimizer, critic_optimizer

    def losses_on(self, x, y):
        actor = tf.reduce_mean(tf.square(self.actor(x) - y[:, :2]))
        critic = tf.reduce_mean(tf.square(self.critic(x) - y[:, 2:]))
        return actor, critic

    def train_step(self, data):
        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            actor, critic = self.losses_on(x, y)
        for optimizer, net, loss in ((self.critic_optimizer, self.critic, critic),
                                     (self.actor_optimizer, self.actor, actor)):
            optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables,
                                          strict=True))
        return {"actor": actor, "critic": critic}


def test_several_optimizers_give_one_row_per_step_covering_every_layer(capsys):
    model = TwoHeads()
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.Adam(0.01))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 4)).astype("float32"), rng.normal(size=(12, 3)).astype("float32")
    before = _weights(model)
    monitor = GradientMonitor(verbose=0)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[monitor])
    h = monitor.history
    assert list(h.steps) == [0, 1, 2]
    assert h.layers == ["actor/a1", "actor/a2", "critic/c1", "critic/c2"]
    assert [i["optimizer"] for i in h.layer_info] == ["actor_optimizer"] * 2 + ["critic_optimizer"] * 2
    # Step 0 against a tape at the starting weights, every layer of both networks.
    for v, w in zip(model.variables, before, strict=True):
        v.assign(w)
    with tf.GradientTape(persistent=True) as tape:
        actor, critic = model.losses_on(x[:4], y[:4])
    expected = []
    for net, loss in ((model.actor, actor), (model.critic, critic)):
        for layer in net.layers:
            grads = tape.gradient(loss, layer.trainable_variables)
            expected.append(np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads)))
    np.testing.assert_allclose(h["grad_norm"][0], expected, rtol=1e-5)
    # Both optimizers' updates are measured.
    assert (h["update_ratio"] > 0).all()
    err = capsys.readouterr().err
    assert "not built" not in err and "never called" not in err


class GAN(keras.Model):
    """The GAN of Keras' own examples, in small: random latent vectors, d_optimizer and g_optimizer."""

    def __init__(self):
        super().__init__()
        self.discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                                               keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)],
                                              name="discriminator")
        self.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8),
                                           keras.layers.LeakyReLU(0.2), keras.layers.Dense(4)], name="generator")

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real):
        batch = tf.shape(real)[0]
        fake = self.generator(tf.random.normal((batch, 2)))
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], 0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(tf.concat([fake, real], 0)))
        d_vars = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars, strict=True))
        with tf.GradientTape() as tape:
            fooled = self.discriminator(self.generator(tf.random.normal((batch, 2))))
            g_loss = self.loss_fn(tf.zeros((batch, 1)), fooled)
        g_vars = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars, strict=True))
        return {"d_loss": d_loss, "g_loss": g_loss}


def test_a_gan_records_every_step_and_says_which_optimizer_updates_what(capsys):
    gan = GAN()
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    monitor = GradientMonitor(verbose=0)
    gan.fit(np.random.default_rng(3).normal(size=(16, 4)).astype("float32"), batch_size=8, epochs=1, verbose=0,
            callbacks=[monitor])
    h = monitor.history
    assert list(h.steps) == [0, 1]
    assert [i["optimizer"] for i in h.layer_info] == ["d_optimizer"] * 2 + ["g_optimizer"] * 2
    assert (h["grad_norm"] > 0).all() and np.isfinite(h["grad_norm"]).all()
    # The LeakyReLU layers complete their Dense layers' units.
    assert [i["activation_layer"] is not None for i in h.layer_info] == [True, False, True, False]
    err = capsys.readouterr().err
    assert "not built" not in err and "never called" not in err
    console = Console(width=220, record=True, color_system=None)
    monitor.summary(console=console)
    out = console.export_text()
    unit = f"{h.layers[2]} → {h.layer_info[2]['activation_layer']}"
    assert unit.startswith("generator/dense") and "leaky_re_lu" in unit
    row = next(line for line in out.splitlines() if unit in line)
    assert "g_optimizer" in row and "leaky_relu" in row


def _blocks(residual: bool):
    """A stem, two blocks whose last Dense starts at zero, and a head: in a
    plain chain the zero kernels stop every gradient before them; with skip
    connections only the layers inside the blocks get none."""
    x = keras.Input((6,))
    h = keras.layers.Dense(6, activation="tanh", name="stem")(x)
    for b in range(2):
        branch = keras.layers.Dense(6, activation="tanh", name=f"block{b}_a")(h)
        branch = keras.layers.Dense(6, kernel_initializer="zeros", name=f"block{b}_b")(branch)
        h = keras.layers.Add()([h, branch]) if residual else branch
    return keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(h))


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
def test_the_diagnosis_judges_a_residual_net_along_its_main_path(residual):
    from gradscope.diagnosis import diagnose

    model = _blocks(residual)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(4)
    monitor = GradientMonitor(verbose=0)
    model.fit(rng.normal(size=(8, 6)).astype("float32"), rng.integers(0, 3, 8), batch_size=8, verbose=0,
              callbacks=[monitor])
    d = diagnose(monitor.history)
    found = {f.rule: f.layers for f in d.findings}
    if residual:
        # The stem gets its gradient through the skips: not vanishing. Inside
        # each block the zero kernel passes nothing back to the first layer.
        assert "vanishing" not in found
        assert found["weak_branch"] == ["block0_a", "block1_a"]
        assert d.layers[0].ratio > 0.05
    else:
        assert found["vanishing"] == ["stem", "block0_a", "block0_b", "block1_a"]
