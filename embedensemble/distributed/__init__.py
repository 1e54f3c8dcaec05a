"""Scale-out on Ray: batch prediction and cross-fitting.

Optional: ``pip install embedensemble[ray]``. Nothing here is imported by the single-process
paths; :mod:`.ray_predict` and :mod:`.ray_fit` import Ray when called; data-parallel fine-tuning (DDP) is :mod:`embedensemble.finetune.parallel`.
"""
