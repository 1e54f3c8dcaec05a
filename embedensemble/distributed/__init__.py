"""Scale-out: batch prediction and cross-fitting on Ray, data-parallel fine-tuning on several GPUs.

Optional: ``pip install embedensemble[ray]``. Nothing here is imported by the single-process
paths; :mod:`.ray_predict` and :mod:`.ray_fit` import Ray when called, :mod:`.ddp` needs only torch.
"""
