"""The dense autoencoder. Imports Keras when called, never at module import."""

from __future__ import annotations

from typing import Any

from ecg_anomaly.trainer.presets import TrainConfig


def build_autoencoder(config: TrainConfig, input_length: int) -> Any:
    """``input → encoder… → embedding → …mirrored decoder → input_length``, compiled with Adam.

    With the tutorial preset this is the tutorial's ``AnomalyDetector`` written as a
    functional model (same layers, activations, initialisers, loss and optimiser).
    """
    import keras

    inputs = keras.Input(shape=(input_length,), name="normalised_beats")
    x = inputs
    for units in (*config.encoder, config.embedding, *reversed(config.encoder)):
        x = keras.layers.Dense(units, activation=config.activation)(x)
    outputs = keras.layers.Dense(input_length, activation=config.output_activation)(x)
    model = keras.Model(inputs, outputs, name=f"autoencoder_{config.preset}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=config.loss)
    return model
