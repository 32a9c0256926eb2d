"""GTSRB data: loading, track-aware splits, augmentation, class metadata, archive import."""
