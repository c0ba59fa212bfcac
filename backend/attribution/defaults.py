"""The gradient methods' default settings, in a module without torch: the CLI's flags state them in their help."""
TRAK_PROJ_DIM = 2048
TRAK_MODELS = 10
TRAK_DAMPING = 1.0  # λ relative to the kernel's mean eigenvalue tr(ΦᵀΦ)/d (trak.py: why)
TRAK_PROJECTIONS = ("gaussian", "rademacher")
INFLUENCE_PARAMS = ("all", "last")
INFLUENCE_DAMPING = 0.01
TRACIN_CHECKPOINTS = 5  # or every epoch of a shorter training
