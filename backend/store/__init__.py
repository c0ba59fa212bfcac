"""The run directory, the one store every stage reads and writes: `schema` names every artifact.

    schema      the table of every run artifact: file, dtype, shape, writing stage, rebuild command
    errors      RunError, and the one message of a missing or broken artifact
    atomic      the project's one atomic write, and transactions over a run (a kill is recovered on open)
    artifacts   one artifact read or written, checked against its schema entry
    manifest    the manifest, creating a run, the identity a resume must match
    shards      model shards as training finishes them, and the completion bitmap
    merge       shards appended to masks.npy/margins.npy in place
    run_dir     Run: read access to a whole run, every array memory-mapped and checked
    blocks      outputs built block by block, resumable
    provenance  what reproduces a result: the code's git commit, the packages' versions
    rows        rows of memory-mapped arrays read with positioned reads
    external    arrays an imported run reads in place from a release (external.json), checksummed
    catalog     the data directory and the runs it holds
    targets     target names `train:i` / `test:j`
"""
