"""Where artifacts live: content-addressed folders `<root>/<asset>/<key>/` with lineage.json, locally or in a bucket.

artifacts.py (ArtifactStore, ArtifactRef: write, find, read lineage, pull),
object_store.py (a bucket as the record, a local mirror as the working copy),
state_files.py (small mutable files: version manifests, the champion, the
OpenAI ledger), hashing.py (recipe keys), temp_folders.py, secrets.py. The
lowest layer: it knows nothing of stages, configs or models.
"""
