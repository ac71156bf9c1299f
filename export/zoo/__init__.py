"""Model definitions (Keras 3). Each module builds one untrained network; importing any of
them imports TensorFlow."""
