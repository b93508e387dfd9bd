"""Datasets (salient-object folders, COCO, the synthetic toy world), masks and image files."""
