"""Modelling: the backbone registry, the classifier, its contract, the devices and the training step."""
