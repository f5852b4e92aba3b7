"""Float and fixed-point EqProp models, topologies, data and training."""
