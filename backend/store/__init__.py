"""The run directory, the one store every stage reads and writes: `schema` names every artifact.

    schema    the table of every run artifact: file, dtype, shape, writing stage, rebuild command
    run_dir   Run (open, check, read), atomic writes, the manifest, model shards
    rows      rows of memory-mapped arrays read with positioned reads
    external  arrays an imported run reads in place from a release (external.json), checksummed
    catalog   the data directory and the runs it holds
    targets   target names `train:i` / `test:j`
"""
