"""Raw lake -> feature store: book replay and feature kernels, resolution history, categories and the split,
data quality, the researcher API."""
