"""An actor-critic agent for Atari KungFuMaster whose shared tanh-64 encoder is trained to keep the knives."""
