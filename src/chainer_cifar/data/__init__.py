"""Data: the official archive, the preprocessed pickles, augmentation."""
