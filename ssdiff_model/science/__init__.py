"""The community toolbox's science, in numpy: nothing here needs torch.

Modules: ``sensors`` (MTF gains, band names), ``resample`` (interp23tap, MTF filters, decimation), ``imresize``
(MATLAB's), ``baselines`` (EXP, BT-H, MTF-GLP-FS, BDSD-PC), ``metrics`` (SAM, ERGAS, Q2n, SCC, D_lambda, D_s, HQNR),
``wald`` (Wald's protocol), ``registration`` (PAN-MS co-registration), ``equalization`` (PAN and band
equalization), ``radiometry`` (full scale from the data), ``back_projection`` (a fused image made consistent with its
MS).
"""
__all__ = ["back_projection", "baselines", "equalization", "imresize", "metrics", "radiometry", "registration",
           "resample", "sensors", "wald"]
