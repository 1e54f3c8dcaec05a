"""The GPU check (issue 12): the library's frozen embedding and QLoRA fine-tuning against the plain
reference (``shared/gpu-reference/plain_reference.py``), both measured in one run on one card.

``benchmarks/gpu_check.py`` is the command; :mod:`.workload` builds the model and tweets,
:mod:`.library` measures the library's paths, :mod:`.report` compares and renders.
"""
