"""Importers: runs built from results published elsewhere, above every stage whose files they write.

    release   the published datamodels-data release (Ilyas et al. 2022) imported as a run
"""
