"""The autoencoders: dense (the tutorial's shape) or convolutional. Keras is imported when called.

Both map normalised beats ``[N, L]`` to their reconstruction ``[N, L]`` (sigmoid output, as the
data is min-max normalised to [0, 1]) through a layer named ``embedding``: the code that the latent
nearest-normals score (:mod:`ecg_anomaly.trainer.latent`) measures distances in.
"""

from __future__ import annotations

from typing import Any

from ecg_anomaly.trainer.presets import TrainConfig

EMBEDDING_LAYER = "embedding"


def build_autoencoder(config: TrainConfig, input_length: int) -> Any:
    """The configured autoencoder, compiled with Adam and the configured loss.

    With the tutorial preset this is the tutorial's ``AnomalyDetector`` written as a
    functional model (same layers, activations, initialisers, loss and optimiser).
    """
    import keras

    inputs = keras.Input(shape=(input_length,), name="normalised_beats")
    build = _convolutional if config.architecture == "conv" else _dense
    outputs = build(keras, config, inputs, input_length)
    model = keras.Model(inputs, outputs, name=f"autoencoder_{config.preset}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=config.loss)
    return model


def encoder(model: Any) -> Any:
    """``model`` from its input to its code (shared weights)."""
    import keras

    return keras.Model(model.input, model.get_layer(EMBEDDING_LAYER).output, name="encoder")


def reconstruction_and_code(model: Any) -> Any:
    """One model with both outputs, so the encoder runs once per beat."""
    import keras

    return keras.Model(model.input, [model.output, model.get_layer(EMBEDDING_LAYER).output], name="scoring")


def _dense(keras: Any, config: TrainConfig, inputs: Any, input_length: int) -> Any:
    """``input → encoder… → embedding → …mirrored decoder → input_length``."""
    x = inputs
    for units in config.encoder:
        x = keras.layers.Dense(units, activation=config.activation)(x)
    x = keras.layers.Dense(config.embedding, activation=config.activation, name=EMBEDDING_LAYER)(x)
    for units in reversed(config.encoder):
        x = keras.layers.Dense(units, activation=config.activation)(x)
    return keras.layers.Dense(input_length, activation=config.output_activation)(x)


def _convolutional(keras: Any, config: TrainConfig, inputs: Any, input_length: int) -> Any:
    """Strided 1-D convolutions (each halves the length) and a dense embedding; a dense decoder.

    A beat's shape features (a wide QRS, a missing P wave) are local and may sit a few samples
    earlier or later; shared convolution kernels learn them from a few hundred beats where a dense
    layer needs one weight per sample and position, and the code they lead to is where the score
    measures distances. The decoder is dense: transposed convolutions reconstructed no better here
    and cost onnxruntime three times the scoring time at batch 1 (their output shapes are computed
    at run time; docs/model-quality.md).
    """
    layers = keras.layers
    x = layers.Reshape((input_length, 1))(inputs)
    for channels, width in zip(config.conv_channels, config.conv_kernels, strict=True):
        x = layers.Conv1D(channels, width, strides=2, padding="same", activation=config.activation)(x)
    x = layers.Dense(config.embedding, activation=config.activation, name=EMBEDDING_LAYER)(
        layers.Flatten()(x)
    )
    for units in config.decoder:
        x = layers.Dense(units, activation=config.activation)(x)
    return layers.Dense(input_length, activation=config.output_activation)(x)
