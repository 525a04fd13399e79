"""``benchbone select``'s defaults, the one table that ``Request``, ``benchbone.select`` and the command line read
(why these values: ``request``'s docstring). It imports nothing, so the command line's parser can read it."""

DEFAULTS = {"epsilon": 1.0, "confidence": 0.9, "margin": 3.0, "taper": 0.5, "claim_from": 0.5, "val_fraction": 0.2,
            "screen_per_class": 20, "screen_min": 200, "c_steps": 9, "val_per_train": 2, "screen_by": "logme"}
