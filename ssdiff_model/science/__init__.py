"""The community toolbox's science: sensors, resampling, classical baselines, quality indexes, Wald's protocol,
co-registration, equalization and radiometry. Nothing here needs torch."""
