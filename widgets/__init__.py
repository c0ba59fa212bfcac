"""The dashboard's shared UI pieces, one module per concern, imported by app.py and the pages.

    text           user input quoted so it cannot render, server paths hidden, errors as one st.error
    access         the signed-in user and the retraining job slot
    run_context    the URL's run, the run picker, and what every page reads of the run
    url_state      page state in the URL: the target, choices, tabs, opening a target on another page
    target_picker  choosing a target by index, class, the hard-target lists or at random
    image_grid     the clickable thumbnail grid and the one reader of a plotly selection

Beside pages/, not in it: Streamlit treats every file in pages/ as a page.
"""
