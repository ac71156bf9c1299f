"""Model definitions (Keras 3). Each module builds one untrained network; importing any of
them imports TensorFlow; this package itself imports nothing, so that the command line
can name the zoo without it."""

# The zoo, in the order `aimass export zoo` builds it.
ZOO = ("digits", "digits-embed", "digits-gan", "wine", "diabetes", "charlm", "alexnet")
