"""The gradient methods' default settings, in a module without torch: the CLI's flags state them in their help.

The knobs that `methods-eval --select` searches (backend.attribution.selection.GRIDS) default to what it chose on
the digits run of `make run` (validation: held-out models 0-149; README, "Settings chosen on validation")."""
TRAK_PROJ_DIM = 2048
TRAK_MODELS = 10
TRAK_DAMPING = 1.0  # λ relative to the kernel's mean eigenvalue tr(ΦᵀΦ)/d (trak.py: why)
TRAK_PROJECTIONS = ("gaussian", "rademacher")
INFLUENCE_PARAMS = ("all", "last")
# By solver: the last layer's exact solve was searched; the CG solve over all parameters (9 minutes a setting on
# digits) was not, and keeps the damping its CG was measured with.
INFLUENCE_DAMPING = {"all": 0.01, "last": 1e-5}
