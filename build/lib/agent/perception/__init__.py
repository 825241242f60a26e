"""Perception: the small-object detector, the input normalizations, the weight maps of the decoder's loss,
the perturbations of its frames, and the matching that scores a reconstruction's objects."""
