"""Who may do what in the dashboard: the auth mode, the signed-in user and their role, the retraining budget.

    auth     DATAMODELS_AUTH (off, a trusted proxy header, or st.login's OIDC), loopback binds, roles, the user
    budget   the per-run cap on models that clicks may train (kept in the run), and the queue for the one job a server runs
    names    annotator names: what may be stored and shown as a reviewer's (and a signed-in user's) name
"""
