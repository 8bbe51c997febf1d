"""TensorFlow Datasets builders over the user's local copy of downstream annotations
(`manual_dir`): TVR (moment retrieval queries) and TVQA (multiple-choice QA). Frame features
and subtitles are not part of these datasets: they live in the HERO feature store
(data_pipeline/hero_store.py) or the MERLOT Reserve records and are joined by `vid_name`.
VCR (vcr.py: images with drawn boxes + Q->A / QA->R texts) and Kinetics-style folders of clips
with label CSVs (kinetics.py: frames + audio features per segment) hold their media.

    builder = tvr.TvrAnnotations(data_dir=DATA_DIR)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DIR))
    ds = builder.as_dataset(split='validation')
"""
