"""The Ray side of the supervisor: actors, node monitors, RLlib callback and learner, Tune pieces."""
