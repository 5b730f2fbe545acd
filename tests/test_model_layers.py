"""Layer discovery: nested paths, units (weighted layer -> activation layer), the main path."""

import keras
import numpy as np
import pytest

from gradscope import GradientMonitor
from gradscope.model_layers import activation_name, is_built, watched_layers


class Encoder(keras.layers.Layer):
    """A user's block: attention and a feed-forward layer inside one Layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
        self.ffn = keras.layers.Dense(8, name="ffn")

    def call(self, x):
        return self.ffn(self.mha(x, x))


def _by_name(model):
    return {s.name: s for s in watched_layers(model)}


def test_nested_layers_are_named_by_their_path():
    x = keras.Input((3, 8))
    inner = keras.Sequential([keras.Input((3, 8)), keras.layers.Dense(8, name="proj")], name="inner")
    model = keras.Model(x, keras.layers.Dense(2, name="head")(inner(Encoder(name="encoder")(x))))
    names = [s.name for s in watched_layers(model)]
    assert names == ["encoder/mha/query", "encoder/mha/key", "encoder/mha/value", "encoder/mha/attention_output",
                     "encoder/ffn", "inner/proj", "head"]
    # Every trainable variable is claimed once.
    claimed = sorted(i for s in watched_layers(model) for i in s.var_indices)
    assert claimed == list(range(len(model.trainable_variables)))


def test_an_activation_layer_after_a_linear_layer_completes_its_unit():
    x = keras.Input((4,))
    h = keras.layers.Dense(3, name="dense")(x)
    h = keras.layers.Activation("tanh", name="act")(h)
    c = keras.layers.Reshape((3, 1))(h)
    c = keras.layers.Conv1D(2, 1, name="conv")(c)
    c = keras.layers.BatchNormalization(name="bn")(c)
    c = keras.layers.ReLU(name="relu")(c)
    y = keras.layers.Dense(2, activation="tanh", name="out")(keras.layers.Flatten()(c))
    y = keras.layers.Activation("relu", name="after_tanh")(y)  # the Dense has its own activation
    specs = _by_name(keras.Model(x, y))
    assert list(specs) == ["dense", "conv", "bn", "out"]
    assert (specs["dense"].activation, specs["dense"].activation_layer) == ("tanh", "act")
    # conv, batch norm, ReLU: the unit is the convolution's; the norm keeps its own row.
    assert (specs["conv"].activation, specs["conv"].activation_layer) == ("relu", "relu")
    assert (specs["bn"].activation_layer, specs["bn"].normalization) == (None, True)
    assert (specs["out"].activation, specs["out"].activation_layer) == ("tanh", None)


def test_no_unit_when_the_output_is_read_twice():
    x = keras.Input((4,))
    h = keras.layers.Dense(4, name="dense")(x)
    y = keras.layers.Add()([keras.layers.ReLU(name="relu")(h), h])
    specs = _by_name(keras.Model(x, keras.layers.Dense(1, name="out")(y)))
    assert specs["dense"].activation_layer is None
    assert specs["dense"].activation == "linear"


@pytest.mark.parametrize(("layer", "name"), [
    (keras.layers.ReLU(), "relu"), (keras.layers.ReLU(6.0), "relu6"), (keras.layers.ReLU(negative_slope=0.1),
                                                                       "leaky_relu"),
    (keras.layers.LeakyReLU(), "leaky_relu"), (keras.layers.ELU(), "elu"), (keras.layers.PReLU(), "prelu"),
    (keras.layers.Softmax(), "softmax"), (keras.layers.Activation("sigmoid"), "sigmoid"),
    (keras.layers.BatchNormalization(), None),
])
def test_activation_names(layer, name):
    assert activation_name(layer) == name


def _residual(blocks=2):
    x = keras.Input((4,))
    h = keras.layers.Dense(4, activation="tanh", name="stem")(x)
    for b in range(blocks):
        branch = keras.layers.Dense(4, activation="tanh", name=f"block{b}_a")(h)
        branch = keras.layers.Dense(4, name=f"block{b}_b")(branch)
        h = keras.layers.Add(name=f"block{b}_add")([h, branch])
    norm = keras.layers.LayerNormalization(name="norm")(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(norm))


def test_layers_inside_residual_branches_are_off_the_main_path():
    specs = _by_name(_residual())
    main = {name for name, s in specs.items() if s.main_path}
    assert main == {"stem", "norm", "head"}


def test_every_layer_of_a_plain_chain_or_of_separate_input_towers_is_on_the_main_path():
    a, b = keras.Input((3,)), keras.Input((5,))
    ta = keras.layers.Dense(4, name="tower_a")(a)
    tb = keras.layers.Dense(4, name="tower_b")(b)
    model = keras.Model([a, b], keras.layers.Dense(1, name="out")(keras.layers.Concatenate()([ta, tb])))
    assert all(s.main_path for s in watched_layers(model))


def test_is_built_counts_a_model_whose_layers_are_built():
    class Pair(keras.Model):
        def __init__(self):
            super().__init__()
            self.left = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    assert not Pair().built and is_built(Pair())
    assert not is_built(keras.Sequential([keras.layers.Dense(1)]))


def test_the_units_statistics_are_those_of_the_activation_output():
    # Dense with a negative bias, then ReLU: on the linear output no unit is
    # dead and the mean is negative; on the ReLU output every unit is dead.
    x = keras.Input((3,))
    negative = keras.initializers.Constant(-10.0)
    h = keras.layers.Dense(4, name="dense", kernel_initializer="ones", bias_initializer=negative)(x)
    h = keras.layers.ReLU(name="relu")(h)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    data = np.random.default_rng(0).uniform(0, 1, (8, 3)).astype("float32")
    monitor = GradientMonitor(verbose=0)
    model.fit(data, np.ones((8, 1)), batch_size=8, verbose=0, callbacks=[monitor])
    h = monitor.history
    assert h.layer_info[0]["activation_layer"] == "relu"
    assert h.layer_info[0]["activation"] == "relu"
    assert h["dead"][0, 0] == 1.0
    assert h["act_mean"][0, 0] == 0.0
    # The back-propagated gradient is taken at the unit's output too: d(loss)/d(relu output) is nonzero.
    assert h["backprop"][0, 0] > 0


def test_a_glorot_convolution_is_not_small_weights():
    import tensorflow as tf

    from gradscope.diagnosis import weight_gains
    from gradscope.history import GradientHistory

    tf.keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(16, 3, name="conv")])
    spec = watched_layers(model)[0]
    info = spec.info(list(model.trainable_variables))
    assert (info["fan_in"], info["fan_out"], info["kernel_size"]) == (144, 144, 2304)
    h = GradientHistory(["conv"], variables=["conv/kernel", "conv/bias"], layer_info=[info])
    h.append([0], {"grad_norm": np.ones((1, 1))})
    forward, _ = weight_gains(h)
    # Glorot uniform: gain 1 up to the sampling of 2,304 weights.
    assert forward[0] == pytest.approx(1.0, rel=0.05)


def test_a_shared_activation_layer_completes_no_unit():
    class Shared(keras.Model):
        def __init__(self):
            super().__init__()
            self.first, self.second = keras.layers.Dense(4, name="first"), keras.layers.Dense(2, name="second")
            self.relu = keras.layers.ReLU(name="relu")

        def call(self, x):
            return self.relu(self.second(self.relu(self.first(x))))

    model = Shared()
    model(np.zeros((1, 3), "float32"))
    assert [(s.name, s.activation_layer) for s in watched_layers(model)] == [("first", None), ("second", None)]
