"""The output dataset: dataset_info.json, export, staging, checksums, verify."""
