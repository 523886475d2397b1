"""resize_model: new widths or a removed layer, fresh weights, same compile settings."""

import keras
import numpy as np
import pytest

from deepeyes_keras.models import compile_lenet, lenet
from deepeyes_keras.resize import resize_model


def test_lenet_redesign_of_the_paper_has_93920_parameters():
    model = compile_lenet(lenet(seed=0))
    assert model.count_params() == 431_080
    smaller = resize_model(model, {"conv1": 10, "fc1": 100})
    assert smaller.count_params() == 93_920  # the paper's redesign
    assert [layer.name for layer in smaller.layers] == [layer.name for layer in model.layers]
    assert smaller.get_layer("conv1").filters == 10
    # Same compile settings: optimizer momentum, loss and the inv schedule survive.
    assert smaller.optimizer.get_config()["momentum"] == pytest.approx(0.9)
    smaller.fit(np.zeros((8, 28, 28, 1)), np.zeros(8), verbose=0)  # compiled and trainable


def test_functional_model_resize_and_remove_a_dense_layer():
    inputs = keras.Input((12,))
    h = keras.layers.Dense(32, activation="relu", name="h1")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="h2")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    new = resize_model(model, {"h1": 8}, remove=["h2"])
    assert new.get_layer("h1").units == 8
    assert "h2" not in [layer.name for layer in new.layers]
    assert new.count_params() == 12 * 8 + 8 + 8 * 3 + 3
    assert new.compiled
    new.fit(np.zeros((4, 12)), np.zeros(4), verbose=0)
    # Fresh weights: not copied from the original.
    assert not np.allclose(
        new.get_layer("out").get_weights()[0][:8], model.get_layer("out").get_weights()[0][:8]
    )


def test_clear_errors():
    model = lenet()
    with pytest.raises(ValueError, match=r"'conv3' \(did you mean 'conv2'\?\)"):
        resize_model(model, {"conv3": 4})
    with pytest.raises(ValueError, match="MaxPooling2D"):
        resize_model(model, {"pool1": 4})
    with pytest.raises(ValueError, match="output layer"):
        resize_model(model, remove=["fc2"])
    with pytest.raises(ValueError, match="integer"):
        resize_model(model, {"conv1": 0})


def test_remove_the_dense_layer_that_follows_the_conv_stack():
    # The paper's §5.2 case: conv stack, Flatten, a hidden Dense, the output Dense.
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(100, activation="relu", name="fc1"),
            keras.layers.Dense(2, name="fc2"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    smaller = resize_model(model, remove=["fc1"])
    conv, flat = 3 * 3 * 1 * 4 + 4, 8 * 8 * 4
    assert model.count_params() == conv + (flat + 1) * 100 + (100 + 1) * 2
    assert smaller.count_params() == conv + (flat + 1) * 2  # fc2 now reads the Flatten
    assert smaller.get_layer("fc2").kernel.shape == (flat, 2)
    assert "fc1" not in [layer.name for layer in smaller.layers]
    assert smaller(np.zeros((3, 8, 8, 1), "float32")).shape == (3, 2)
