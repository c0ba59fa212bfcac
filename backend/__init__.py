"""The datamodels explorer library: datasets, training, regression, analysis and storage."""
