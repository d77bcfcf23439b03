"""GOOSE data: on-disk layout, decoding and validation, the embedded synthetic dataset,
split statistics and augmentation."""
